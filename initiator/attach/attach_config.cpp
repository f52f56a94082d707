#include "attach_config.h"

#include <toml++/toml.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace hyperscsi::attach {

namespace {

ConfigError error_at(const std::string& origin, const toml::node* node, const std::string& what) {
  std::string where = origin;
  if (node && node->source().begin.line != 0)
    where += ":" + std::to_string(node->source().begin.line);
  return ConfigError{where + ": " + what};
}

// Characters a systemd instance name may hold unescaped (and a file name too).
bool valid_name(const std::string& name) {
  if (name.empty() || name.size() > 64 || name[0] == '.' || name[0] == '-') return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

Status<ConfigError> read_string(const toml::table& t, const char* key, std::string& out,
                                const std::string& origin, const std::string& context) {
  const toml::node* n = t.get(key);
  if (!n) return {};
  auto v = n->value_exact<std::string>();
  if (!v) return Unexpected(error_at(origin, n, context + "." + key + " must be a string"));
  out = *v;
  return {};
}

// port = "afpacket:eth1", or several for one multipath session:
// port = ["afpacket:eth1", "afpacket:eth2"] (kept as "A,B", as --port A --port B).
Status<ConfigError> read_ports(const toml::table& t, std::string& out, const std::string& origin,
                               const std::string& context) {
  const toml::node* n = t.get("port");
  if (!n) return {};
  const auto wrong = [&] {
    return Unexpected(error_at(origin, n,
                               context + ".port must be a string or an array of strings, e.g. "
                                         "[\"afpacket:eth1\", \"afpacket:eth2\"]"));
  };
  if (auto v = n->value_exact<std::string>()) {
    out = *v;
    return {};
  }
  const toml::array* list = n->as_array();
  if (!list || list->empty()) return wrong();
  out.clear();
  for (const toml::node& e : *list) {
    auto v = e.value_exact<std::string>();
    if (!v || v->empty() || v->find(',') != std::string::npos) return wrong();
    out += (out.empty() ? "" : ",") + *v;
  }
  return {};
}

Status<ConfigError> read_int(const toml::table& t, const char* key, int64_t lo, int64_t hi,
                             int64_t& out, const std::string& origin, const std::string& context) {
  const toml::node* n = t.get(key);
  if (!n) return {};
  auto v = n->value_exact<int64_t>();
  if (!v || *v < lo || *v > hi) {
    return Unexpected(error_at(origin, n,
                               context + "." + key + " must be an integer in " +
                                   std::to_string(lo) + ".." + std::to_string(hi)));
  }
  out = *v;
  return {};
}

Result<Attachment, ConfigError> read_attachment(const std::string& name, const toml::node& node,
                                                const std::string& origin) {
  const std::string context = "attach." + name;
  const toml::table* t = node.as_table();
  if (!t) return Unexpected(error_at(origin, &node, "[" + context + "] must be a table"));
  if (!valid_name(name)) {
    return Unexpected(error_at(origin, &node,
                               "attachment name '" + name +
                                   "' must be 1-64 of A-Z a-z 0-9 - _ . (it names a systemd "
                                   "instance, hyperscsi-attach@NAME.service)"));
  }
  static const char* const kKeys[] = {"port", "target",      "lun",        "fuse",
                                      "loop", "secret_file", "protection", "dead_time",
                                      "wait", "busy_poll_us"};
  for (const auto& [k, v] : *t) {
    bool known = false;
    for (const char* key : kKeys) known |= k.str() == key;
    if (!known)
      return Unexpected(
          error_at(origin, &v, "unknown key '" + std::string(k.str()) + "' in [" + context + "]"));
  }
  Attachment a;
  a.name = name;
  int64_t lun = -1, dead = a.dead_time_s, wait = a.wait_s, busy = a.busy_poll_us;
  if (auto st = read_ports(*t, a.port, origin, context); !st) return Unexpected(st.error());
  if (auto st = read_string(*t, "target", a.target, origin, context); !st)
    return Unexpected(st.error());
  if (auto st = read_string(*t, "fuse", a.fuse_dir, origin, context); !st)
    return Unexpected(st.error());
  if (auto st = read_string(*t, "secret_file", a.secret_file, origin, context); !st)
    return Unexpected(st.error());
  if (auto st = read_string(*t, "protection", a.protection, origin, context); !st)
    return Unexpected(st.error());
  if (auto st = read_int(*t, "lun", 0, 65535, lun, origin, context); !st)
    return Unexpected(st.error());
  if (auto st = read_int(*t, "dead_time", 1, 86400, dead, origin, context); !st)
    return Unexpected(st.error());
  if (auto st = read_int(*t, "wait", 0, 86400, wait, origin, context); !st)
    return Unexpected(st.error());
  if (auto st = read_int(*t, "busy_poll_us", 0, 10000, busy, origin, context); !st)
    return Unexpected(st.error());
  if (const toml::node* n = t->get("loop")) {
    auto v = n->value_exact<bool>();
    if (!v) return Unexpected(error_at(origin, n, context + ".loop must be true or false"));
    a.loop = *v;
  }
  if (a.port.empty())
    return Unexpected(error_at(origin, &node, "[" + context + "] needs port = \"afpacket:IFACE\""));
  if (lun < 0) return Unexpected(error_at(origin, &node, "[" + context + "] needs lun = N"));
  if (a.protection != "off" && a.protection != "integrity" && a.protection != "encrypt") {
    return Unexpected(
        error_at(origin, t->get("protection"),
                 context + ".protection must be \"off\", \"integrity\" or \"encrypt\""));
  }
  if (a.protection != "off" && a.secret_file.empty()) {
    return Unexpected(error_at(origin, t->get("protection"),
                               context + ".protection needs secret_file (the keys come from the "
                                         "shared secret)"));
  }
  if (a.fuse_dir.empty()) a.fuse_dir = "/run/hyperscsi/" + name;
  if (a.fuse_dir[0] != '/')
    return Unexpected(error_at(origin, t->get("fuse"), context + ".fuse must be an absolute path"));
  a.lun = static_cast<uint16_t>(lun);
  a.dead_time_s = static_cast<uint32_t>(dead);
  a.wait_s = static_cast<uint32_t>(wait);
  a.busy_poll_us = busy;
  return a;
}

}  // namespace

std::string default_config_path() {
  const char* env = std::getenv("HYPERSCSI_ATTACH_CONFIG");
  return env && *env ? env : "/etc/hyperscsi/attach.toml";
}

Result<AttachConfig, ConfigError> parse_attach_config(const std::string& text,
                                                      const std::string& origin) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    return Unexpected(ConfigError{origin + ":" + std::to_string(e.source().begin.line) + ":" +
                                  std::to_string(e.source().begin.column) +
                                  ": TOML syntax error: " + std::string(e.description())});
  }
  AttachConfig c;
  c.path = origin;
  for (const auto& [k, v] : root) {
    if (k != "attach")
      return Unexpected(error_at(
          origin, &v,
          "unknown section '" + std::string(k.str()) + "' (attachments are [attach.NAME] tables)"));
  }
  const toml::node* an = root.get("attach");
  if (!an) return c;
  const toml::table* at = an->as_table();
  if (!at) return Unexpected(error_at(origin, an, "'attach' must hold [attach.NAME] tables"));
  for (const auto& [k, v] : *at) {
    auto a = read_attachment(std::string(k.str()), v, origin);
    if (!a) return Unexpected(a.error());
    c.by_name.emplace(a->name, std::move(a).value());
  }
  // Two attachments on one directory would fight over its mount.
  std::map<std::string, std::string> dirs;
  for (const auto& [name, a] : c.by_name) {
    auto [it, fresh] = dirs.emplace(a.fuse_dir, name);
    if (!fresh)
      return Unexpected(ConfigError{origin + ": attachments '" + it->second + "' and '" + name +
                                    "' use the same fuse directory " + a.fuse_dir});
  }
  return c;
}

Result<AttachConfig, ConfigError> load_attach_config(const std::string& path, bool missing_ok) {
  std::ifstream in(path);
  if (!in) {
    if (missing_ok) {
      AttachConfig empty;
      empty.path = path;
      return empty;
    }
    return Unexpected(ConfigError{"cannot read " + path});
  }
  std::ostringstream text;
  text << in.rdbuf();
  return parse_attach_config(text.str(), path);
}

std::string describe_configured(const AttachConfig& config,
                                const std::set<std::string>& attached_dirs) {
  if (config.by_name.empty()) return {};
  std::string out = "\nconfigured in " + config.path + " (hyperscsi-attach up|down NAME):\n";
  char line[512];
  std::snprintf(line, sizeof line, "%-16s %-20s %4s %-20s %-28s %s\n", "NAME", "TARGET", "LUN",
                "PORT", "DIRECTORY", "STATE");
  out += line;
  for (const auto& [name, a] : config.by_name) {
    std::snprintf(line, sizeof line, "%-16s %-20s %4u %-20s %-28s %s\n", name.c_str(),
                  a.target.empty() ? "-" : a.target.c_str(), a.lun, a.port.c_str(),
                  a.fuse_dir.c_str(),
                  attached_dirs.count(a.fuse_dir) ? "attached" : "not attached");
    out += line;
  }
  return out;
}

}  // namespace hyperscsi::attach
