// IoStatus names and the errno mapping, shared by every store (and compiled
// into run-time store modules too, so they need nothing from the program).
#include <cerrno>

#include "hyperscsi/store/block_store.h"

namespace hyperscsi::store {

const char* to_string(IoStatus s) {
  switch (s) {
    case IoStatus::kOk:
      return "ok";
    case IoStatus::kMediumError:
      return "medium error";
    case IoStatus::kNoSpace:
      return "no space";
    case IoStatus::kReadOnly:
      return "read-only";
    case IoStatus::kOutOfRange:
      return "out of range";
    case IoStatus::kUnsupported:
      return "unsupported";
    case IoStatus::kMiscompare:
      return "miscompare";
    case IoStatus::kTimedOut:
      return "timed out";
    case IoStatus::kUnavailable:
      return "unavailable";
  }
  return "?";
}

IoStatus io_status_from_errno(int err) {
  switch (err) {
    case 0:
      return IoStatus::kOk;
    case ENOSPC:
    case EDQUOT:
      return IoStatus::kNoSpace;
    case EROFS:
    case EBADF:
    case EPERM:
    case EACCES:
      return IoStatus::kReadOnly;
    case EOPNOTSUPP:
    case ENOTTY:
      return IoStatus::kUnsupported;
    case EINVAL:
    case EFBIG:
      return IoStatus::kOutOfRange;
    case EILSEQ:  // librbd's compare-and-write miscompare
      return IoStatus::kMiscompare;
    case ETIMEDOUT:
      return IoStatus::kTimedOut;
    case ESHUTDOWN:  // librados: this client was blocklisted (EBLOCKLISTED)
      return IoStatus::kUnavailable;
    default:
      return IoStatus::kMediumError;
  }
}

}  // namespace hyperscsi::store
