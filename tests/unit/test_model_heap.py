import platform

from model.heap import release_freed_memory


def test_freed_heap_memory_is_handed_back_where_the_c_library_can():
    assert release_freed_memory() is (platform.libc_ver()[0] == "glibc")
