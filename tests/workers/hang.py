"""A cell worker that starts a grandchild and then hangs (runner timeout and cleanup tests).

It prints the grandchild's pid to its log so the test can check it was killed.
"""
import subprocess
import sys
import time

if __name__ == "__main__":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(f"hanging with grandchild {child.pid}", flush=True)
    time.sleep(600)
