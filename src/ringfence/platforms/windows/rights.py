"""The access masks ringfence's ACEs use, by name (pure: shared by the compiler, the journal
and the ctypes executor, so that a plan printed on Linux names exactly the bits Windows gets).

Why these sets:
- ``modify`` is what a writable root grants: read, write, create, delete inside it, but not
  ``WRITE_DAC``/``WRITE_OWNER`` (a sandboxed command never rewrites ACLs, including ours).
- ``write`` is what a protected path denies: every way to change the object or, for a
  directory, its entries (``FILE_ADD_FILE`` and ``FILE_ADD_SUBDIRECTORY`` share bits with
  ``FILE_WRITE_DATA``/``FILE_APPEND_DATA``), including ``DELETE``, ACL and owner changes.
- ``delete`` and ``delete_child`` close the two ways to rename or remove an object: ``DELETE``
  on it, or ``FILE_DELETE_CHILD`` on its parent. A protected path's directories get both,
  each on that one object (not inherited), so they cannot be moved away with their contents.
- ``read_write`` hides a deny-read path: nothing can be read, listed, written or executed.
"""

from __future__ import annotations

FILE_READ_DATA = 0x0001  # FILE_LIST_DIRECTORY on a directory
FILE_WRITE_DATA = 0x0002  # FILE_ADD_FILE
FILE_APPEND_DATA = 0x0004  # FILE_ADD_SUBDIRECTORY
FILE_READ_EA = 0x0008
FILE_WRITE_EA = 0x0010
FILE_EXECUTE = 0x0020  # FILE_TRAVERSE
FILE_DELETE_CHILD = 0x0040
FILE_READ_ATTRIBUTES = 0x0080
FILE_WRITE_ATTRIBUTES = 0x0100
DELETE = 0x00010000
READ_CONTROL = 0x00020000
WRITE_DAC = 0x00040000
WRITE_OWNER = 0x00080000
SYNCHRONIZE = 0x00100000

READ = (
    FILE_READ_DATA | FILE_READ_EA | FILE_EXECUTE | FILE_READ_ATTRIBUTES | READ_CONTROL | SYNCHRONIZE
)
WRITE = (
    FILE_WRITE_DATA
    | FILE_APPEND_DATA
    | FILE_WRITE_EA
    | FILE_WRITE_ATTRIBUTES
    | FILE_DELETE_CHILD
    | DELETE
    | WRITE_DAC
    | WRITE_OWNER
)
MODIFY = READ | (WRITE & ~(WRITE_DAC | WRITE_OWNER))

MASKS: dict[str, int] = {
    "read": READ,
    "modify": MODIFY,
    "write": WRITE,
    "delete": DELETE,
    "delete_child": FILE_DELETE_CHILD,
    # SYNCHRONIZE stays allowed: denying it only breaks waiting on handles, it reveals nothing.
    "read_write": (READ | WRITE) & ~SYNCHRONIZE,
}
