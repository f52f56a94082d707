// The hyperscsi-target daemon's configuration: from command-line flags (the
// simple case) or a TOML file (schema documented in example.toml), validated
// into one DaemonConfig. Every error names what is wrong (file, line, field).
// Thread-safety: plain values and pure functions (file reads aside).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hyperscsi/engine/access.h"
#include "hyperscsi/proto/crypto.h"
#include "hyperscsi/proto/result.h"
#include "hyperscsi/store/block_store.h"

namespace hyperscsi::daemon {

struct ConfigError {
  std::string message;
};

struct LunSetting {
  uint16_t number = 0;
  std::string store;          // a path, "ram:SIZE" or "rbd:POOL/IMAGE"
  uint64_t size = 0;          // bytes; 0: the store's own size (files: create when missing if set)
  uint32_t block_size = 512;  // 512 or 4096
  bool block_size_set = false;  // given explicitly (an rbd image's own block size must agree)
  bool read_only = false;
  bool direct_io = false;
  bool exclusive = false;  // one session at a time (scsi::LuConfig::exclusive)
  store::RbdOptions ceph;  // rbd: LUNs: the daemon's [ceph] settings (or --ceph-* flags)
  engine::AccessList access;
  bool operator==(const LunSetting&) const = default;
  // Same backing store and geometry (a change needs the unit reopened).
  bool same_store(const LunSetting& o) const {
    return store == o.store && size == o.size && block_size == o.block_size &&
           block_size_set == o.block_size_set && read_only == o.read_only &&
           direct_io == o.direct_io && exclusive == o.exclusive && ceph == o.ceph;
  }
  bool is_rbd() const { return store.rfind("rbd:", 0) == 0; }
};

struct DaemonConfig {
  std::string target_name = "hyperscsi-target";
  std::vector<std::string> ports;
  std::vector<LunSetting> luns;
  std::string control_path;   // empty: /run/hyperscsi/<target_name>.sock
  std::string log_level;      // empty: keep the command line's
  uint32_t keepalive_ms = 0;  // 0: protocol default
  uint32_t dead_time_ms = 0;  // 0: protocol default
  uint32_t drain_timeout_ms = 10000;
  // With several ports: offer MULTIPATH, so that one session may use all of
  // them (target.multipath, --no-multipath). False: every session stays on
  // the port it logged in on.
  bool multipath = true;
  // target.read_thread, --read-thread (he::EngineConfig::read_thread).
  bool read_thread = false;
  // [[initiator]] name + secret / secret_file: shared secrets by initiator
  // name (never logged). Read at start; a change needs a restart.
  std::map<std::string, proto::crypto::SecretBytes, std::less<>> initiator_secrets;
  // [ceph]: how rbd: LUNs reach the cluster (copied into each such LUN).
  store::RbdOptions ceph;
};

// Copies config.ceph into every rbd: LUN of `config`.
void apply_ceph_settings(DaemonConfig& config);

// Reads a secret file: its bytes, one trailing newline removed, at least
// kMinSecretSize bytes.
Result<proto::crypto::SecretBytes, ConfigError> read_secret_file(const std::string& path);

// "N=SPEC" from --lun.
Result<LunSetting, ConfigError> parse_lun_flag(std::string_view text, uint32_t block_size);

// Reads and validates a TOML file.
Result<DaemonConfig, ConfigError> load_config_file(const std::string& path);
// Parses TOML text (`origin` names it in errors).
Result<DaemonConfig, ConfigError> parse_config(std::string_view text, const std::string& origin);

// Checks what both sources share: at least one port, LUN numbers unique and
// in range, block sizes, store specs present, names within protocol limits.
Status<ConfigError> validate(const DaemonConfig& config);

std::string default_control_path(const std::string& target_name);

}  // namespace hyperscsi::daemon
