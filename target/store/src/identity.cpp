#include "hyperscsi/store/identity.h"

#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace hyperscsi::store {
namespace {

using Uuid = std::array<std::uint8_t, 16>;

// RFC 9562: version in the high nibble of byte 6, variant 10 in byte 8.
Uuid stamp(Uuid u, std::uint8_t version) {
  u[6] = static_cast<std::uint8_t>((u[6] & 0x0F) | (version << 4));
  u[8] = static_cast<std::uint8_t>((u[8] & 0x3F) | 0x80);
  return u;
}

// Name-based identity: the first 16 bytes of SHA-256 over `name`, stamped as
// RFC 9562 version 8 (custom).
Uuid derived(std::string_view name) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  Uuid u{};
  if (EVP_Digest(name.data(), name.size(), md, &len, EVP_sha256(), nullptr) == 1 && len >= 16)
    std::memcpy(u.data(), md, 16);
  return stamp(u, 8);
}

std::string read_line(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  if (!in || !std::getline(in, s)) return {};
  while (!s.empty() && (s.back() == ' ' || s.back() == '\n' || s.back() == '\r')) s.pop_back();
  while (!s.empty() && s.front() == ' ') s.erase(s.begin());
  return s;
}

std::string sys_dir(dev_t rdev) {
  return "/sys/dev/block/" + std::to_string(major(rdev)) + ":" + std::to_string(minor(rdev));
}

std::string cmdline_of(long pid) {
  std::string raw;
  const int fd =
      ::open(("/proc/" + std::to_string(pid) + "/cmdline").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char buf[512];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) raw.assign(buf, static_cast<size_t>(n));
    ::close(fd);
  }
  for (char& c : raw)
    if (c == '\0') c = ' ';
  while (!raw.empty() && raw.back() == ' ') raw.pop_back();
  if (raw.size() > 160) raw = raw.substr(0, 157) + "...";
  return raw;
}

}  // namespace

bool StoreIdentity::known() const {
  for (auto b : uuid)
    if (b != 0) return true;
  return false;
}

std::string StoreIdentity::text() const {
  char buf[37];
  const auto& u = uuid;
  std::snprintf(buf, sizeof buf,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
                u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
                u[15]);
  return buf;
}

std::optional<Uuid> parse_uuid(std::string_view t) {
  if (t.size() != 36) return std::nullopt;
  Uuid u{};
  std::size_t j = 0;
  for (std::size_t i = 0; i < t.size();) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (t[i] != '-') return std::nullopt;
      ++i;
      continue;
    }
    auto nibble = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    const int hi = nibble(t[i]), lo = i + 1 < t.size() ? nibble(t[i + 1]) : -1;
    if (hi < 0 || lo < 0) return std::nullopt;
    u[j++] = static_cast<std::uint8_t>(hi << 4 | lo);
    i += 2;
  }
  return u;
}

StoreIdentity random_identity(std::string source) {
  Uuid u{};
  std::size_t got = 0;
  while (got < u.size()) {
    const ssize_t n = ::getrandom(u.data() + got, u.size() - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  StoreIdentity id;
  id.uuid = stamp(u, 4);
  id.source = std::move(source);
  id.persistent = false;
  return id;
}

StoreIdentity name_identity(std::string_view name, std::string source) {
  StoreIdentity id;
  id.uuid = derived(name);
  id.source = std::move(source);
  id.persistent = true;
  return id;
}

std::optional<StoreIdentity> file_identity(int fd, const std::string& path, bool create,
                                           std::string& error) {
  char buf[64] = {};
  const ssize_t n = ::fgetxattr(fd, kIdentityXattr, buf, sizeof buf - 1);
  if (n >= 0) {
    const std::string_view text(buf, static_cast<std::size_t>(n));
    auto u = parse_uuid(text);
    if (!u) {
      error = "its identity attribute " + std::string(kIdentityXattr) + " is not a UUID ('" +
              std::string(text.substr(0, 40)) + "'); remove it (setfattr -x " + kIdentityXattr +
              " " + path + ") to give the file a new identity";
      return std::nullopt;
    }
    return StoreIdentity{*u, "xattr " + std::string(kIdentityXattr), true};
  }
  std::string why = n < 0 && errno == ERANGE ? "attribute too long" : std::strerror(errno);
  if (n < 0 && errno == ENODATA) {
    if (!create) {
      why = "no identity attribute yet and not allowed to create one";
    } else {
      StoreIdentity fresh =
          random_identity("xattr " + std::string(kIdentityXattr) + ", created now");
      const std::string text = fresh.text();
      if (::fsetxattr(fd, kIdentityXattr, text.data(), text.size(), XATTR_CREATE) == 0) {
        fresh.persistent = true;
        return fresh;
      }
      if (errno == EEXIST) return file_identity(fd, path, false, error);  // raced with another
      why = std::string("cannot store ") + kIdentityXattr + ": " + std::strerror(errno);
    }
  }
  // Fallback: device, inode and birth time; the same file on this host only.
  struct statx sx {};
  std::string name = "file";
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_INO | STATX_BTIME, &sx) == 0) {
    name += ":" + std::to_string(sx.stx_dev_major) + ":" + std::to_string(sx.stx_dev_minor) + ":" +
            std::to_string(sx.stx_ino);
    if (sx.stx_mask & STATX_BTIME)
      name +=
          ":" + std::to_string(sx.stx_btime.tv_sec) + "." + std::to_string(sx.stx_btime.tv_nsec);
  } else {
    name += ":" + path;
  }
  return StoreIdentity{derived(name), "derived from device and inode (" + why + ")", false};
}

StoreIdentity block_device_identity(dev_t rdev) {
  const std::string dir = sys_dir(rdev);
  // What the device says about itself, most specific first.
  for (const char* attr : {"wwid", "device/wwid"}) {
    const std::string v = read_line(dir + "/" + attr);
    if (!v.empty()) return {derived("wwid:" + v), std::string("device ") + attr + " " + v, true};
  }
  for (const char* attr : {"serial", "device/serial"}) {
    const std::string v = read_line(dir + "/" + attr);
    if (!v.empty()) {
      const std::string model = read_line(dir + "/device/model");
      return {derived("serial:" + model + ":" + v), std::string("device serial ") + v, true};
    }
  }
  if (const std::string v = read_line(dir + "/dm/uuid"); !v.empty())
    return {derived("dm:" + v), "device-mapper uuid " + v, true};
  if (const std::string v = read_line(dir + "/md/uuid"); !v.empty())
    return {derived("md:" + v), "md uuid " + v, true};
  if (const std::string backing = read_line(dir + "/loop/backing_file"); !backing.empty()) {
    const int fd = ::open(backing.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      std::string ignored;
      auto id = file_identity(fd, backing, true, ignored);
      ::close(fd);
      if (id) {
        id->source = "loop device over " + backing + ": " + id->source;
        return *id;
      }
    }
  }
  if (const std::string part = read_line(dir + "/partition"); !part.empty()) {
    // The disk is the parent directory of the partition in sysfs.
    std::error_code ec;
    const auto disk = std::filesystem::canonical(dir, ec).parent_path();
    const std::string dev = read_line(disk.string() + "/dev");
    unsigned maj = 0, min = 0;
    if (!ec && std::sscanf(dev.c_str(), "%u:%u", &maj, &min) == 2) {
      StoreIdentity parent = block_device_identity(makedev(maj, min));
      return {derived("part:" + parent.text() + ":" + part),
              "partition " + part + " of a disk with " + parent.source, parent.persistent};
    }
  }
  return {derived("dev:" + std::to_string(major(rdev)) + ":" + std::to_string(minor(rdev))),
          "derived from the device number (the device reports no wwid, serial or uuid)", false};
}

std::string lock_holder(dev_t dev, ino_t ino) {
  std::ifstream in("/proc/locks");
  std::string line;
  char want[64];
  std::snprintf(want, sizeof want, "%02x:%02x:%lu", major(dev), minor(dev),
                static_cast<unsigned long>(ino));
  while (std::getline(in, line)) {
    // "1: FLOCK  ADVISORY  WRITE 1234 fd:00:5678 0 EOF"; waiters have "->".
    std::istringstream ls(line);
    std::string id, kind, mode, rw, pid, where;
    ls >> id >> kind;
    if (kind == "->") continue;
    ls >> mode >> rw >> pid >> where;
    if (where != want) continue;
    const long p = std::strtol(pid.c_str(), nullptr, 10);
    if (p <= 0) return "a process this namespace cannot see";
    std::string who = "pid " + pid;
    if (const std::string cmd = cmdline_of(p); !cmd.empty()) who += " (" + cmd + ")";
    return who;
  }
  return {};
}

std::string block_device_user(dev_t rdev) {
  const std::string want = std::to_string(major(rdev)) + ":" + std::to_string(minor(rdev));
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // "36 35 98:0 / /mnt1 rw,noatime master:1 - ext3 /dev/root rw"
    std::istringstream ls(line);
    std::string id, parent, devno, root, mount;
    ls >> id >> parent >> devno >> root >> mount;
    if (devno == want) return "mounted on " + mount;
  }
  std::error_code ec;
  std::string holders;
  for (const auto& e : std::filesystem::directory_iterator(sys_dir(rdev) + "/holders", ec))
    holders += (holders.empty() ? "" : ", ") + e.path().filename().string();
  if (!holders.empty()) return "held by " + holders;
  return {};
}

}  // namespace hyperscsi::store
