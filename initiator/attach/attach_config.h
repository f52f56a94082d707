// Attachments that come back at boot: /etc/hyperscsi/attach.toml names each
// attachment in a table [attach.NAME]; `hyperscsi-attach up NAME` attaches it
// and `down NAME` detaches it (the hyperscsi-attach@NAME.service template runs
// both), `list` shows every configured one. Only parsing and validation live
// here; the attaching is main.cpp's. Plain functions, no shared state.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>

#include "hyperscsi/proto/result.h"

namespace hyperscsi::attach {

struct Attachment {
  std::string name;         // the table key: [attach.NAME]
  std::string port;         // port spec, e.g. "afpacket:eth1" (required)
  std::string target;       // target name; empty: the only one that answers
  uint16_t lun = 0;         // required
  std::string fuse_dir;     // default /run/hyperscsi/NAME
  bool loop = true;         // bind a loop device
  std::string secret_file;  // empty: unauthenticated login
  std::string protection = "off";
  uint32_t dead_time_s = 60;  // a command without reply for this long fails
  uint32_t wait_s = 120;      // how long `up` waits for the target to answer
  int64_t busy_poll_us = -1;  // -1: the program's default
};

struct AttachConfig {
  std::string path;                           // where it was read from
  std::map<std::string, Attachment> by_name;  // sorted by name
};

struct ConfigError {
  std::string message;  // "PATH:LINE: what is wrong"
};

// $HYPERSCSI_ATTACH_CONFIG or /etc/hyperscsi/attach.toml.
std::string default_config_path();

// Parses TOML text; `origin` names it in error messages. Unknown keys, wrong
// types, out-of-range numbers and names systemd cannot use as an instance
// are errors.
Result<AttachConfig, ConfigError> parse_attach_config(const std::string& text,
                                                      const std::string& origin);
// Reads and parses a file. A missing file is an empty configuration when
// `missing_ok`, else an error.
Result<AttachConfig, ConfigError> load_attach_config(const std::string& path, bool missing_ok);

// The configured attachments as a table for `list`: NAME, TARGET, LUN, PORT,
// DIRECTORY and whether its directory is among `attached_dirs`. Empty text
// when nothing is configured.
std::string describe_configured(const AttachConfig& config,
                                const std::set<std::string>& attached_dirs);

}  // namespace hyperscsi::attach
