"""A cell worker killed by SIGKILL, as a `kill -9` would be (no OOM kill counted: an `error`, not `oom`)."""
import os
import signal

if __name__ == "__main__":
    print("allocating...", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
