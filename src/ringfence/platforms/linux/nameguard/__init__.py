"""The name guard: stop a command from creating protected names that do not exist yet.

Read-only bind mounts protect protected paths that exist when the sandbox starts, and
Landlock cannot say "this directory except this name". So the command runs under a seccomp
filter that sends every syscall which creates, removes or renames a directory entry to a
supervisor process. The supervisor resolves the path the way the kernel would for the
command, asks :mod:`guard_rules`, and then either refuses with EACCES or performs the
operation itself and returns the result (file descriptors are injected with
SECCOMP_IOCTL_NOTIF_ADDFD). It never lets the original call continue: the path lives in the
command's memory and another thread could change it between the check and the kernel's
second read; emulation acts only on the string it read and the directory fds it pinned. (The
one exception is a send no path is looked up for, from a caller nobody can change the
descriptors of: see ``sockets.py``.)

Setup, in order:

1. the command's process calls :func:`install_filter` right before exec (after Landlock) and
   hands the returned listener fd to the supervisor (``steps.hand_over_listener``: the
   supervisor takes it with pidfd_getfd, since a sendmsg would already wait for the
   supervisor), then closes it (it is O_CLOEXEC; a command holding its own listener could
   answer its own notifications);
2. the supervisor process runs ``Supervisor(listener_fd, rules).serve(stop_fd)``.

Requirements on the supervisor (checked where cheap, see ``Supervisor.__init__``): it is not
under this filter; it shares the command's mount namespace and root, and its ``/proc`` is
the procfs of its own pid namespace; it can ptrace-read the command (same user, command
dumpable, Landlock domain an ancestor of the command's or none); it runs in its own process
because it sets the process umask to the command's for each emulated creation.

Filter decisions (x86_64 and aarch64):

* a foreign architecture (i386 via int 0x80, arm32 compat) or an x32 syscall number kills the
  process (SECCOMP_RET_KILL_PROCESS): such a call is a way around a filter written for the
  native numbers, and a loud death is better than an errno a fallback path would hide;
* open/openat with O_CREAT, creat, mkdir*, mknod*, symlink*, link*, rename*, unlink*, rmdir go
  to the supervisor;
* openat2 fails with ENOSYS (its flags live in a struct BPF cannot read; libc and most
  programs fall back to openat);
* io_uring_setup fails with EPERM (io_uring operations bypass seccomp);
* connect, sendmsg, sendmmsg, and sendto with an address go to the supervisor (unix sockets
  on disk outside the writable roots are refused: see ``sockets.py``);
* clone with CLONE_FILES but not CLONE_THREAD fails with EPERM (every sharer of a descriptor
  table is then a thread, which ``SocketCalls._sendmsg`` counts);
* with ``names=False`` (no protected name, path or git rule) only the socket calls go to the
  supervisor and landlock_restrict_self is allowed;
* everything else is allowed.

The package, one job a module:

* ``filter.py``: the seccomp filter above (:func:`build_filter`, :func:`install_filter`);
* ``supervisor.py``: :class:`Supervisor`, the notification loop: it hands each call to its
  handler, answers it, and reports refusals (:class:`Denial`);
* ``listener.py``: the seccomp notification structs and ioctls (receive, answer, ID_VALID);
* ``call.py``: one notification's caller: its arguments, memory, descriptors, /proc entry;
* ``resolve.py``: resolving a call's path as the kernel would for the caller (directory fds,
  ``/proc/<pid>/fd`` and other magic links, symlinks) to a pinned parent and canonical path;
* ``files.py``: emulating the calls that change names and metadata (open with O_CREAT or for
  writing, mkdir, mknod, symlink, link, rename, unlink, chmod, chown, xattrs, truncate, bind);
* ``sockets.py``: emulating connect, sendto, sendmsg and sendmmsg (unix sockets on disk);
* ``results.py``: the data the others pass around (replies, refusals, :class:`Denial`,
  resolved paths); ``ffi.py``: the libc functions called through ctypes.

The rules themselves are elsewhere: ``guard_rules.py`` (protected names, unix sockets) and the
``gitguard`` package (git directories).
"""

from ringfence.platforms.linux.nameguard.filter import build_filter, install_filter
from ringfence.platforms.linux.nameguard.results import Denial
from ringfence.platforms.linux.nameguard.supervisor import Supervisor

__all__ = ["Denial", "Supervisor", "build_filter", "install_filter"]
