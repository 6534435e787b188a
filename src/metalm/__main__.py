import sys

from . import interrupts

interrupts.defer()  # Ctrl-C during the imports: recorded, answered once they are done
try:
    from .cli import main
except KeyboardInterrupt:  # a second Ctrl-C at the very start: one line, as later
    interrupts.handled()
    print("metalm: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
