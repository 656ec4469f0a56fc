"""Small, model-free utilities shared by every part of the project."""

from .util import (EasyDict, Logger, OfflineError, atomic_write_path, call_func_by_name, construct_class_by_name,
                   format_time, get_obj_by_name, make_cache_dir_path, open_url)

__all__ = ['EasyDict', 'Logger', 'OfflineError', 'atomic_write_path', 'call_func_by_name', 'construct_class_by_name',
           'format_time', 'get_obj_by_name', 'make_cache_dir_path', 'open_url']
