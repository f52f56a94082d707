// Loading the shared secret for the initiator's command lines and the nbdkit
// plugin: base::read_secret_file with the protocol's minimum size, its
// failure as an initiator Error.
//
// Thread-safety: a free function without shared state.
#include "hyperscsi/base/secret_file.h"
#include "hyperscsi/initiator/initiator.h"
#include "hyperscsi/proto/auth.h"

namespace hyperscsi::initiator {

Result<proto::crypto::SecretBytes, Error> read_secret_file(const std::string& path) {
  auto r = base::read_secret_file(path, proto::kMinSecretSize);
  if (!r) return Unexpected{Error{ErrorKind::kInvalidArgument, r.error().message}};
  return std::move(r).value();
}

}  // namespace hyperscsi::initiator
