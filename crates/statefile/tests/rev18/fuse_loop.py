import os, sys, errno
from fuse import FUSE, FuseOSError, Operations

class Loop(Operations):
    def __init__(self, root): self.root = root
    def _p(self, p): return self.root + p
    def access(self, p, m):
        if not os.access(self._p(p), m): raise FuseOSError(errno.EACCES)
    def getattr(self, p, fh=None):
        try: st = os.lstat(self._p(p))
        except OSError as e: raise FuseOSError(e.errno)
        return {k: getattr(st, k) for k in ('st_atime','st_ctime','st_gid','st_mode','st_mtime','st_nlink','st_size','st_uid','st_ino')}
    def readdir(self, p, fh): return ['.', '..'] + os.listdir(self._p(p))
    def mkdir(self, p, m): os.mkdir(self._p(p), m)
    def rmdir(self, p): os.rmdir(self._p(p))
    def unlink(self, p): os.unlink(self._p(p))
    def rename(self, a, b): os.rename(self._p(a), self._p(b))
    def link(self, t, n):
        if os.environ.get('REV18_NO_LINK') and '/.statefile' not in t: raise FuseOSError(errno.EPERM)
        os.link(self._p(n), self._p(t))
    def chmod(self, p, m): os.chmod(self._p(p), m)
    def chown(self, p, u, g): os.chown(self._p(p), u, g)
    def utimens(self, p, t=None): os.utime(self._p(p), t)
    def truncate(self, p, l, fh=None):
        with open(self._p(p), 'r+') as f: f.truncate(l)
    def open(self, p, flags): return os.open(self._p(p), flags)
    def create(self, p, mode, fi=None): return os.open(self._p(p), os.O_WRONLY|os.O_CREAT|os.O_EXCL, mode)
    def read(self, p, n, off, fh): os.lseek(fh, off, 0); return os.read(fh, n)
    def write(self, p, d, off, fh): os.lseek(fh, off, 0); return os.write(fh, d)
    def flush(self, p, fh): return 0
    def release(self, p, fh): os.close(fh); return 0
    def fsync(self, p, ds, fh): os.fsync(fh); return 0
    def fsyncdir(self, p, ds, fh): return 0
    def statfs(self, p):
        s = os.statvfs(self._p(p))
        return {k: getattr(s, k) for k in ('f_bavail','f_bfree','f_blocks','f_bsize','f_favail','f_ffree','f_files','f_flag','f_frsize','f_namemax')}
    def readlink(self, p): return os.readlink(self._p(p))
    def symlink(self, t, s): os.symlink(s, self._p(t))

if __name__ == '__main__':
    FUSE(Loop(sys.argv[1]), sys.argv[2], foreground=True, nothreads=True, use_ino=True)
