"""train.malloc: freed buffers stay in the process, so a thread's next buffer of the same size takes no page faults."""

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

# A worker thread (as XLA's are) allocates, fills and frees a 64 MiB buffer five times; prints the page faults of the
# last four (the first one pages the buffer in whatever the settings).
FAULTS_PER_BUFFER = """
import ctypes, resource, sys, threading
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
if sys.argv[1] == "retain":
    from train.malloc import retain_freed_memory
    assert retain_freed_memory()
faults = []
def work():
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        buffer = libc.malloc(64 << 20)  # as XLA's CPU runtime allocates (numpy would ask for huge pages)
        ctypes.memset(buffer, 1, 64 << 20)
        libc.free(buffer)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
thread = threading.Thread(target=work)
thread.start()
thread.join()
print(max(faults[1:]))
"""


def faults_per_buffer(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_BUFFER, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_retained_memory_is_not_paged_in_again():
    pages = (64 << 20) // 4096
    assert faults_per_buffer("default") > pages // 2  # glibc's default: mmap'd anew, every page faults
    assert faults_per_buffer("retain") < pages // 50
