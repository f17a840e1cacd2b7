import sys

from derot._proto import generate

if __name__ == "__main__":
    generate(force="--force" in sys.argv)
    print("protobuf stubs up to date")
