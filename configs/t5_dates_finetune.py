"""Fine-tune a pre-trained T5 on the shipped date-translation task ("monday, the twenty fifth of march 2002" ->
"2002-03-25"): T5's fine-tuning settings (a constant learning rate, Raffel et al. 2020 section 3.1.4) with AdamW at 1e-3 in place
of Adafactor at 1e-3, and dropout 0.1 as the checkpoint has it.

--config.init_from names the checkpoint folder (config.json + model.safetensors + tokenizer files): the `model/`
folder `python -m train --config configs/t5_tiny.py --workdir workdir/t5_tiny` leaves, or a public one such as
t5-small or flan-t5-small. The tokenizer is the checkpoint's (data.tokenizer="").

Each eval decodes its 4 x 32 held-out dates greedily and reports sacreBLEU, chrF and exact match of the text
(eval.metric "translation"). The best checkpoint is kept by exact match: a date has one right answer, and BLEU
gives partial credit to a wrong year with the right month and day, which is still a wrong date.
"""

from train.recipes import base_config


def get_config():
    c = base_config()
    c.model, c.task = "t5-tiny", "seq2seq"  # the architecture comes from init_from; model names it when there is none
    c.init_from = "workdir/t5_tiny/model"
    c.train.update(dict(steps=1000, batch_size=32, log_every=20, eval_every=250))
    c.optimizer.update(dict(learning_rate=1e-3, b2=0.98, weight_decay=0.0))
    c.schedule.update(dict(name="constant", warmup_steps=0))
    c.eval.metric = "translation"  # eval_bleu, eval_chrf, eval_exact_match of the greedy translations
    c.checkpoint.update(dict(every_steps=250, keep=2, best_metric="eval_exact_match", best_mode="max"))
    c.data.update(dict(source="dates", tokenizer="", max_length=32, max_target_length=16, eval_batches=4))
    return c
