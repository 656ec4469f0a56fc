"""Loading network snapshots (ours and upstream EG3D pickles): not available yet."""

import sys


def load_network_pkl(f, force_fp16: bool = False):
    raise NotImplementedError('legacy.load_network_pkl: not available yet; this arrives with a later issue.')


if __name__ == '__main__':
    print('legacy.py: not available yet; this command arrives with a later issue.', file=sys.stderr)
    raise SystemExit(2)
