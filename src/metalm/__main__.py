import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C at the very start: one line, as later
    print("metalm: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
