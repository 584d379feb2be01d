"""A cell worker that dies of SIGABRT after printing to its log (runner isolation tests)."""
import os
import sys

if __name__ == "__main__":
    print("about to crash", flush=True)
    sys.stderr.write("simulated native crash\n")
    sys.stderr.flush()
    os.abort()
