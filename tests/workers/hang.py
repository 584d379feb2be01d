"""A cell worker that starts a grandchild and then hangs (runner timeout and cleanup tests).

It writes the grandchild's pid next to the result path so the test can check it was killed.
"""
import subprocess
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(sys.argv[2]).with_name("grandchild.pid").write_text(str(child.pid))
    Path(sys.argv[2] + ".pid").write_text(str(child.pid))
    print(f"hanging with grandchild {child.pid}", flush=True)
    time.sleep(600)
