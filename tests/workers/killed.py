"""A cell worker killed by SIGKILL, as the kernel's out-of-memory killer would do."""
import os
import signal

if __name__ == "__main__":
    print("allocating...", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
