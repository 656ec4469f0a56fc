"""gen_videos: not available yet (see the project's open issues)."""

import sys


def main() -> int:
    print('gen_videos.py: not available yet; this command arrives with a later issue.', file=sys.stderr)
    return 2


if __name__ == '__main__':
    raise SystemExit(main())
