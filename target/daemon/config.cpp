#include "config.h"

#include <toml++/toml.h>
#include <fstream>
#include <set>
#include <sstream>

#include "hyperscsi/base/secret_file.h"
#include "hyperscsi/proto/auth.h"
#include "hyperscsi/proto/messages.h"
#include "hyperscsi/scsi/lun_map.h"
#include "hyperscsi/store/block_store.h"

namespace hyperscsi::daemon {

namespace {

ConfigError error_at(const std::string& origin, const toml::node* node, const std::string& what) {
  std::string where = origin;
  if (node && node->source().begin.line != 0)
    where += ":" + std::to_string(node->source().begin.line);
  return ConfigError{where + ": " + what};
}

// Reads an optional typed field; a present field of the wrong type is an error.
template <typename T>
Status<ConfigError> read_field(const toml::table& t, std::string_view key, T& out,
                               const std::string& origin, std::string_view context) {
  const toml::node* n = t.get(key);
  if (!n) return {};
  auto v = n->value_exact<T>();
  if (!v) {
    return Unexpected(
        error_at(origin, n, std::string(context) + "." + std::string(key) + " has the wrong type"));
  }
  out = *v;
  return {};
}

Status<ConfigError> read_size(const toml::table& t, std::string_view key, uint64_t& out,
                              const std::string& origin, std::string_view context) {
  const toml::node* n = t.get(key);
  if (!n) return {};
  std::string text;
  if (auto i = n->value_exact<int64_t>()) {
    if (*i <= 0)
      return Unexpected(error_at(origin, n, std::string(context) + ".size must be positive"));
    text = std::to_string(*i);
  } else if (auto s = n->value_exact<std::string>()) {
    text = *s;
  } else {
    return Unexpected(
        error_at(origin, n, std::string(context) + ".size must be a number or \"10G\""));
  }
  auto sz = store::parse_size(text);
  if (!sz) return Unexpected(error_at(origin, n, "bad size '" + text + "': " + sz.error().message));
  out = *sz;
  return {};
}

Result<engine::AccessList, ConfigError> read_access(const toml::table& lun,
                                                    const std::string& origin,
                                                    const std::string& context) {
  engine::AccessList list;
  const toml::node* n = lun.get("allow");
  if (!n) return list;
  const toml::array* arr = n->as_array();
  if (!arr) return Unexpected(error_at(origin, n, context + ".allow must be an array of tables"));
  for (const toml::node& e : *arr) {
    const toml::table* t = e.as_table();
    if (!t) return Unexpected(error_at(origin, &e, context + ".allow entries must be tables"));
    engine::AccessEntry entry;
    std::string mac;
    if (auto st = read_field(*t, "initiator", entry.initiator, origin, context + ".allow"); !st)
      return Unexpected(st.error());
    if (auto st = read_field(*t, "mac", mac, origin, context + ".allow"); !st)
      return Unexpected(st.error());
    if (!mac.empty()) {
      entry.mac = engine::parse_mac(mac);
      if (!entry.mac)
        return Unexpected(error_at(origin, t->get("mac"), "bad MAC address '" + mac + "'"));
    }
    if (entry.initiator.empty() && !entry.mac)
      return Unexpected(error_at(origin, t, context + ".allow entry needs initiator or mac"));
    if (entry.initiator.size() > proto::kMaxNameLength)
      return Unexpected(error_at(origin, t, "initiator name longer than 223 bytes"));
    for (const auto& [k, v] : *t) {
      if (k != "initiator" && k != "mac")
        return Unexpected(error_at(
            origin, &v, "unknown key '" + std::string(k.str()) + "' in " + context + ".allow"));
    }
    list.entries.push_back(std::move(entry));
  }
  return list;
}

Result<LunSetting, ConfigError> read_lun(const toml::table& t, const std::string& origin) {
  LunSetting l;
  const toml::node* num = t.get("number");
  if (!num) return Unexpected(error_at(origin, &t, "[[lun]] needs a number"));
  auto n = num->value_exact<int64_t>();
  if (!n || *n < 0 || *n > static_cast<int64_t>(scsi::kMaxLun))
    return Unexpected(
        error_at(origin, num, "lun number must be 0.." + std::to_string(scsi::kMaxLun)));
  l.number = static_cast<uint16_t>(*n);
  const std::string ctx = "lun " + std::to_string(l.number);
  if (auto st = read_field(t, "store", l.store, origin, ctx); !st) return Unexpected(st.error());
  if (l.store.empty()) return Unexpected(error_at(origin, &t, ctx + ": store is required"));
  if (auto st = read_size(t, "size", l.size, origin, ctx); !st) return Unexpected(st.error());
  int64_t bs = 512;
  if (auto st = read_field(t, "block_size", bs, origin, ctx); !st) return Unexpected(st.error());
  l.block_size_set = t.get("block_size") != nullptr;
  if (bs != 512 && bs != 4096)
    return Unexpected(
        error_at(origin, t.get("block_size"), ctx + ": block_size must be 512 or 4096"));
  l.block_size = static_cast<uint32_t>(bs);
  if (auto st = read_field(t, "read_only", l.read_only, origin, ctx); !st)
    return Unexpected(st.error());
  if (auto st = read_field(t, "direct_io", l.direct_io, origin, ctx); !st)
    return Unexpected(st.error());
  if (auto st = read_field(t, "exclusive", l.exclusive, origin, ctx); !st)
    return Unexpected(st.error());
  auto acl = read_access(t, origin, ctx);
  if (!acl) return Unexpected(acl.error());
  l.access = std::move(acl).value();
  std::string auth = "optional", protection = "off";
  if (auto st = read_field(t, "auth", auth, origin, ctx); !st) return Unexpected(st.error());
  if (auth != "optional" && auth != "required")
    return Unexpected(
        error_at(origin, t.get("auth"), ctx + ": auth must be \"required\" or \"optional\""));
  l.access.auth_required = auth == "required";
  if (auto st = read_field(t, "protection", protection, origin, ctx); !st)
    return Unexpected(st.error());
  auto level = proto::parse_protection(protection);
  if (!level)
    return Unexpected(error_at(origin, t.get("protection"),
                               ctx + ": protection must be \"off\", \"integrity\" or \"encrypt\""));
  l.access.protection = *level;
  static const std::set<std::string> known = {"number",     "store",     "size",  "block_size",
                                              "read_only",  "direct_io", "allow", "auth",
                                              "protection", "exclusive"};
  for (const auto& [k, v] : t)
    if (!known.count(std::string(k.str())))
      return Unexpected(error_at(origin, &v, ctx + ": unknown key '" + std::string(k.str()) + "'"));
  // "ram" with a separate size becomes "ram:SIZE".
  if (l.store == "ram") {
    if (l.size == 0) return Unexpected(error_at(origin, &t, ctx + ": store \"ram\" needs a size"));
    l.store = "ram:" + std::to_string(l.size);
  }
  return l;
}

Status<ConfigError> read_ceph(const toml::table& t, const std::string& origin,
                              store::RbdOptions& c) {
  if (auto st = read_field(t, "conf", c.conf_file, origin, "ceph"); !st) return st;
  if (auto st = read_field(t, "id", c.client_id, origin, "ceph"); !st) return st;
  if (auto st = read_field(t, "keyring", c.keyring, origin, "ceph"); !st) return st;
  for (const char* key : {"connect_timeout", "op_timeout"}) {
    int64_t v = key[0] == 'c' ? c.connect_timeout_s : c.op_timeout_s;
    if (auto st = read_field(t, key, v, origin, "ceph"); !st) return st;
    if (v < 0 || v > 3600)
      return Unexpected(
          error_at(origin, t.get(key), "ceph." + std::string(key) + " must be 0..3600 seconds"));
    (key[0] == 'c' ? c.connect_timeout_s : c.op_timeout_s) = static_cast<uint32_t>(v);
  }
  if (c.client_id.rfind("client.", 0) == 0) c.client_id.erase(0, 7);
  static const std::set<std::string> known = {"conf", "id", "keyring", "connect_timeout",
                                              "op_timeout"};
  for (const auto& [k, v] : t)
    if (!known.count(std::string(k.str())))
      return Unexpected(error_at(origin, &v, "ceph: unknown key '" + std::string(k.str()) + "'"));
  return {};
}

Status<ConfigError> read_initiator(const toml::table& t, const std::string& origin,
                                   DaemonConfig& c) {
  std::string name, secret, file;
  if (auto st = read_field(t, "name", name, origin, "initiator"); !st) return st;
  if (auto st = read_field(t, "secret", secret, origin, "initiator"); !st) return st;
  if (auto st = read_field(t, "secret_file", file, origin, "initiator"); !st) return st;
  for (const auto& [k, v] : t)
    if (k != "name" && k != "secret" && k != "secret_file")
      return Unexpected(
          error_at(origin, &v, "initiator: unknown key '" + std::string(k.str()) + "'"));
  if (name.empty() || name.size() > proto::kMaxNameLength)
    return Unexpected(error_at(origin, &t, "[[initiator]] needs a name of 1..223 bytes"));
  if (secret.empty() == file.empty())
    return Unexpected(
        error_at(origin, &t, "initiator '" + name + "': give exactly one of secret, secret_file"));
  proto::crypto::SecretBytes bytes;
  if (!file.empty()) {
    auto r = read_secret_file(file);
    if (!r)
      return Unexpected(error_at(origin, &t, "initiator '" + name + "': " + r.error().message));
    bytes = std::move(r).value();
  } else {
    if (secret.size() < proto::kMinSecretSize)
      return Unexpected(error_at(origin, t.get("secret"),
                                 "initiator '" + name + "': secret shorter than " +
                                     std::to_string(proto::kMinSecretSize) + " bytes"));
    bytes = proto::crypto::SecretBytes(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(secret.data()), secret.size()));
    proto::crypto::cleanse(
        std::span<uint8_t>(reinterpret_cast<uint8_t*>(secret.data()), secret.size()));
  }
  if (!c.initiator_secrets.emplace(name, std::move(bytes)).second)
    return Unexpected(error_at(origin, &t, "duplicate [[initiator]] '" + name + "'"));
  return {};
}

}  // namespace

Result<proto::crypto::SecretBytes, ConfigError> read_secret_file(const std::string& path) {
  auto r = base::read_secret_file(path, proto::kMinSecretSize);
  if (!r) return Unexpected(ConfigError{r.error().message});
  return std::move(r).value();
}

std::string default_control_path(const std::string& target_name) {
  std::string safe;
  for (char c : target_name) safe += (c == '/' ? '_' : c);
  return "/run/hyperscsi/" + safe + ".sock";
}

Result<LunSetting, ConfigError> parse_lun_flag(std::string_view text, uint32_t block_size) {
  const size_t eq = text.find('=');
  if (eq == std::string_view::npos || eq == 0 || eq + 1 == text.size())
    return Unexpected(ConfigError{"--lun '" + std::string(text) +
                                  "': expected N=PATH, N=ram:SIZE or N=rbd:POOL/IMAGE"});
  const std::string num(text.substr(0, eq));
  uint64_t n = 0;
  for (char c : num) {
    if (c < '0' || c > '9' || n > scsi::kMaxLun)
      return Unexpected(ConfigError{"--lun '" + std::string(text) + "': bad LUN number"});
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  if (n > scsi::kMaxLun)
    return Unexpected(ConfigError{"--lun '" + std::string(text) + "': LUN number above " +
                                  std::to_string(scsi::kMaxLun)});
  LunSetting l;
  l.number = static_cast<uint16_t>(n);
  l.store = std::string(text.substr(eq + 1));
  l.block_size = block_size;
  return l;
}

Result<DaemonConfig, ConfigError> parse_config(std::string_view text, const std::string& origin) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    return Unexpected(ConfigError{origin + ":" + std::to_string(e.source().begin.line) + ":" +
                                  std::to_string(e.source().begin.column) +
                                  ": TOML syntax error: " + std::string(e.description())});
  }
  DaemonConfig c;
  for (const auto& [k, v] : root) {
    if (k != "target" && k != "lun" && k != "initiator" && k != "ceph")
      return Unexpected(error_at(origin, &v, "unknown section '" + std::string(k.str()) + "'"));
  }
  if (const toml::node* tn = root.get("target")) {
    const toml::table* t = tn->as_table();
    if (!t) return Unexpected(error_at(origin, tn, "[target] must be a table"));
    if (auto st = read_field(*t, "name", c.target_name, origin, "target"); !st)
      return Unexpected(st.error());
    if (auto st = read_field(*t, "control", c.control_path, origin, "target"); !st)
      return Unexpected(st.error());
    if (auto st = read_field(*t, "log_level", c.log_level, origin, "target"); !st)
      return Unexpected(st.error());
    int64_t ka = 0, dead = 0, drain = c.drain_timeout_ms;
    if (auto st = read_field(*t, "keepalive_ms", ka, origin, "target"); !st)
      return Unexpected(st.error());
    if (auto st = read_field(*t, "dead_time_ms", dead, origin, "target"); !st)
      return Unexpected(st.error());
    if (auto st = read_field(*t, "drain_timeout_ms", drain, origin, "target"); !st)
      return Unexpected(st.error());
    if (ka < 0 || dead < 0 || drain < 0 || ka > 3600000 || dead > 3600000 || drain > 3600000)
      return Unexpected(error_at(origin, t, "target: times must be 0..3600000 ms"));
    if (auto st = read_field(*t, "multipath", c.multipath, origin, "target"); !st)
      return Unexpected(st.error());
    if (auto st = read_field(*t, "read_thread", c.read_thread, origin, "target"); !st)
      return Unexpected(st.error());
    c.keepalive_ms = static_cast<uint32_t>(ka);
    c.dead_time_ms = static_cast<uint32_t>(dead);
    c.drain_timeout_ms = static_cast<uint32_t>(drain);
    if (const toml::node* pn = t->get("ports")) {
      const toml::array* arr = pn->as_array();
      if (!arr) return Unexpected(error_at(origin, pn, "target.ports must be an array of strings"));
      for (const toml::node& p : *arr) {
        auto s = p.value_exact<std::string>();
        if (!s) return Unexpected(error_at(origin, &p, "target.ports must be an array of strings"));
        c.ports.push_back(*s);
      }
    }
    static const std::set<std::string> known = {
        "name",         "control",          "log_level", "ports",      "keepalive_ms",
        "dead_time_ms", "drain_timeout_ms", "multipath", "read_thread"};
    for (const auto& [k, v] : *t)
      if (!known.count(std::string(k.str())))
        return Unexpected(
            error_at(origin, &v, "target: unknown key '" + std::string(k.str()) + "'"));
  }
  if (const toml::node* ln = root.get("lun")) {
    const toml::array* arr = ln->as_array();
    if (!arr) return Unexpected(error_at(origin, ln, "lun must be an array of tables ([[lun]])"));
    std::set<uint16_t> seen;
    for (const toml::node& e : *arr) {
      const toml::table* t = e.as_table();
      if (!t) return Unexpected(error_at(origin, &e, "lun must be an array of tables ([[lun]])"));
      auto l = read_lun(*t, origin);
      if (!l) return Unexpected(l.error());
      if (!seen.insert(l->number).second)
        return Unexpected(error_at(origin, t, "duplicate LUN " + std::to_string(l->number)));
      c.luns.push_back(std::move(l).value());
    }
  }
  if (const toml::node* in = root.get("initiator")) {
    const toml::array* arr = in->as_array();
    if (!arr)
      return Unexpected(
          error_at(origin, in, "initiator must be an array of tables ([[initiator]])"));
    for (const toml::node& e : *arr) {
      const toml::table* t = e.as_table();
      if (!t)
        return Unexpected(
            error_at(origin, &e, "initiator must be an array of tables ([[initiator]])"));
      if (auto st = read_initiator(*t, origin, c); !st) return Unexpected(st.error());
    }
  }
  if (const toml::node* cn = root.get("ceph")) {
    const toml::table* t = cn->as_table();
    if (!t) return Unexpected(error_at(origin, cn, "[ceph] must be a table"));
    if (auto st = read_ceph(*t, origin, c.ceph); !st) return Unexpected(st.error());
  }
  apply_ceph_settings(c);
  if (auto st = validate(c); !st)
    return Unexpected(ConfigError{origin + ": " + st.error().message});
  return c;
}

void apply_ceph_settings(DaemonConfig& config) {
  for (LunSetting& l : config.luns)
    if (l.is_rbd()) l.ceph = config.ceph;
}

Result<DaemonConfig, ConfigError> load_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Unexpected(ConfigError{"cannot read config file '" + path + "'"});
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return Unexpected(ConfigError{"cannot read config file '" + path + "'"});
  const std::string text = ss.str();
  if (text.size() > (1u << 20))
    return Unexpected(ConfigError{"config file '" + path + "' is larger than 1 MiB"});
  return parse_config(text, path);
}

Status<ConfigError> validate(const DaemonConfig& c) {
  if (c.target_name.empty() || c.target_name.size() > proto::kMaxNameLength)
    return Unexpected(ConfigError{"target name must be 1..223 bytes"});
  if (c.ports.empty()) return Unexpected(ConfigError{"no port given (--port or target.ports)"});
  if (c.luns.empty()) return Unexpected(ConfigError{"no LUN given (--lun or [[lun]])"});
  std::set<uint16_t> seen;
  for (const LunSetting& l : c.luns) {
    if (!seen.insert(l.number).second)
      return Unexpected(ConfigError{"duplicate LUN " + std::to_string(l.number)});
    if (l.block_size != 512 && l.block_size != 4096)
      return Unexpected(
          ConfigError{"LUN " + std::to_string(l.number) + ": block size must be 512 or 4096"});
    if (l.store.empty())
      return Unexpected(ConfigError{"LUN " + std::to_string(l.number) + ": no store"});
    if (l.size % l.block_size != 0)
      return Unexpected(
          ConfigError{"LUN " + std::to_string(l.number) + ": size " + std::to_string(l.size) +
                      " is not a multiple of the block size " + std::to_string(l.block_size)});
  }
  return {};
}

}  // namespace hyperscsi::daemon
