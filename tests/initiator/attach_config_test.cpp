// attach.toml (initiator/attach/attach_config.h): what `hyperscsi-attach up`,
// `down` and `list` read. Valid tables with their defaults, and every kind of
// mistake an administrator makes, each rejected with the file and line.
#include "attach_config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace hyperscsi::attach {
namespace {

std::string error_of(const std::string& text) {
  auto c = parse_attach_config(text, "attach.toml");
  EXPECT_FALSE(c.ok()) << "accepted:\n" << text;
  return c.ok() ? std::string() : c.error().message;
}

TEST(AttachConfig, TablesWithDefaults) {
  auto c = parse_attach_config(R"(
[attach.data]
port = "afpacket:eth1"
target = "storage1"
lun = 3

[attach.mirror-b]
port = "afpacket:eth2"
lun = 0
fuse = "/srv/hs/b"
loop = false
secret_file = "/etc/hyperscsi/host1.key"
protection = "encrypt"
dead_time = 5
wait = 0
busy_poll_us = 0
)",
                               "attach.toml");
  ASSERT_TRUE(c.ok()) << c.error().message;
  ASSERT_EQ(c->by_name.size(), 2u);
  const Attachment& d = c->by_name.at("data");
  EXPECT_EQ(d.port, "afpacket:eth1");
  EXPECT_EQ(d.target, "storage1");
  EXPECT_EQ(d.lun, 3);
  EXPECT_EQ(d.fuse_dir, "/run/hyperscsi/data");
  EXPECT_TRUE(d.loop);
  EXPECT_EQ(d.protection, "off");
  EXPECT_EQ(d.dead_time_s, 60u);
  EXPECT_EQ(d.wait_s, 120u);
  EXPECT_EQ(d.busy_poll_us, -1);
  const Attachment& b = c->by_name.at("mirror-b");
  EXPECT_TRUE(b.target.empty());
  EXPECT_EQ(b.fuse_dir, "/srv/hs/b");
  EXPECT_FALSE(b.loop);
  EXPECT_EQ(b.secret_file, "/etc/hyperscsi/host1.key");
  EXPECT_EQ(b.protection, "encrypt");
  EXPECT_EQ(b.dead_time_s, 5u);
  EXPECT_EQ(b.wait_s, 0u);
  EXPECT_EQ(b.busy_poll_us, 0);
}

// Several ports: one multipath session, as `attach --port A --port B`.
TEST(AttachConfig, PortListForAMultipathSession) {
  auto c = parse_attach_config(
      "[attach.mp]\nport = [\"afpacket:eth1\", \"afpacket:eth2\"]\nlun = 0\n", "attach.toml");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->by_name.at("mp").port, "afpacket:eth1,afpacket:eth2");
}

TEST(AttachConfig, EmptyFileHasNoAttachments) {
  auto c = parse_attach_config("# nothing yet\n", "attach.toml");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->by_name.empty());
  EXPECT_EQ(describe_configured(*c, {}), "");
}

TEST(AttachConfig, MistakesNameFileAndLine) {
  EXPECT_EQ(error_of("[attach.a]\nport = \"afpacket:eth1\"\nlun = 0\nlnu = 1\n"),
            "attach.toml:4: unknown key 'lnu' in [attach.a]");
  EXPECT_EQ(error_of("[attach.a]\nport = \"afpacket:eth1\"\nlun = \"0\"\n"),
            "attach.toml:3: attach.a.lun must be an integer in 0..65535");
  EXPECT_EQ(error_of("[attach.a]\nport = \"afpacket:eth1\"\nlun = 70000\n"),
            "attach.toml:3: attach.a.lun must be an integer in 0..65535");
  const std::string port_type =
      "attach.a.port must be a string or an array of strings, e.g. "
      "[\"afpacket:eth1\", \"afpacket:eth2\"]";
  EXPECT_EQ(error_of("[attach.a]\nport = 1\nlun = 0\n"), "attach.toml:2: " + port_type);
  EXPECT_EQ(error_of("[attach.a]\nport = []\nlun = 0\n"), "attach.toml:2: " + port_type);
  EXPECT_EQ(error_of("[attach.a]\nport = [\"afpacket:eth1\", 2]\nlun = 0\n"),
            "attach.toml:2: " + port_type);
  EXPECT_EQ(error_of("[attach.a]\nport = [\"afpacket:eth1,afpacket:eth2\"]\nlun = 0\n"),
            "attach.toml:2: " + port_type);
  EXPECT_EQ(error_of("[attach.a]\nlun = 0\n"),
            "attach.toml:1: [attach.a] needs port = \"afpacket:IFACE\"");
  EXPECT_EQ(error_of("[attach.a]\nport = \"afpacket:eth1\"\n"),
            "attach.toml:1: [attach.a] needs lun = N");
  EXPECT_EQ(error_of("[attach.a]\nport = \"afpacket:eth1\"\nlun = 0\nloop = 1\n"),
            "attach.toml:4: attach.a.loop must be true or false");
  EXPECT_EQ(error_of("[attach.a]\nport = \"afpacket:eth1\"\nlun = 0\ndead_time = 0\n"),
            "attach.toml:4: attach.a.dead_time must be an integer in 1..86400");
  EXPECT_EQ(error_of("[attach.a]\nport = \"afpacket:eth1\"\nlun = 0\nprotection = \"strong\"\n"),
            "attach.toml:4: attach.a.protection must be \"off\", \"integrity\" or \"encrypt\"");
  EXPECT_EQ(error_of("[attach.a]\nport = \"afpacket:eth1\"\nlun = 0\nprotection = \"encrypt\"\n"),
            "attach.toml:4: attach.a.protection needs secret_file (the keys come from the shared "
            "secret)");
  EXPECT_EQ(error_of("[attach.a]\nport = \"afpacket:eth1\"\nlun = 0\nfuse = \"run/a\"\n"),
            "attach.toml:4: attach.a.fuse must be an absolute path");
  EXPECT_EQ(error_of("[target]\nname = \"x\"\n"),
            "attach.toml:1: unknown section 'target' (attachments are [attach.NAME] tables)");
  EXPECT_EQ(error_of("attach = 3\n"), "attach.toml:1: 'attach' must hold [attach.NAME] tables");
  EXPECT_EQ(error_of("[attach]\na = 3\n"), "attach.toml:2: [attach.a] must be a table");
  EXPECT_NE(error_of("[attach.\"x y\"]\nport = \"afpacket:eth1\"\nlun = 0\n")
                .find("attachment name 'x y' must be 1-64 of"),
            std::string::npos);
  EXPECT_EQ(error_of("[attach.a]\nport = \"afpacket:eth1\"\nlun = 0\nfuse = \"/run/hs\"\n"
                     "[attach.b]\nport = \"afpacket:eth1\"\nlun = 1\nfuse = \"/run/hs\"\n"),
            "attach.toml: attachments 'a' and 'b' use the same fuse directory /run/hs");
  EXPECT_NE(error_of("[attach.a\nport = 1\n").find("attach.toml:1:"), std::string::npos);
}

TEST(AttachConfig, ListShowsWhatIsAttached) {
  auto c = parse_attach_config(
      "[attach.a]\nport = \"afpacket:eth1\"\ntarget = \"s1\"\nlun = 0\n"
      "[attach.b]\nport = \"afpacket:eth2\"\nlun = 7\n",
      "/etc/hyperscsi/attach.toml");
  ASSERT_TRUE(c.ok());
  const std::string text = describe_configured(*c, {"/run/hyperscsi/b"});
  EXPECT_NE(text.find("configured in /etc/hyperscsi/attach.toml"), std::string::npos) << text;
  EXPECT_NE(text.find("a                s1                      0 afpacket:eth1        "
                      "/run/hyperscsi/a             not attached\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("b                -                       7 afpacket:eth2        "
                      "/run/hyperscsi/b             attached\n"),
            std::string::npos)
      << text;
}

TEST(AttachConfig, MissingFile) {
  const std::string path = testing::TempDir() + "/no-such-attach.toml";
  std::remove(path.c_str());
  auto empty = load_attach_config(path, true);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->by_name.empty());
  auto missing = load_attach_config(path, false);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().message, "cannot read " + path);
  {
    std::ofstream out(path);
    out << "[attach.x]\nport = \"afpacket:eth0\"\nlun = 1\n";
  }
  auto read = load_attach_config(path, false);
  ASSERT_TRUE(read.ok()) << read.error().message;
  EXPECT_EQ(read->by_name.at("x").lun, 1);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace hyperscsi::attach
