// base::read_secret_file: what it accepts, and a typed error naming the file
// for everything it refuses.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "hyperscsi/base/secret_file.h"

namespace {

using hyperscsi::base::kMaxSecretFileSize;
using hyperscsi::base::read_secret_file;
using hyperscsi::base::SecretFileErrorKind;
namespace fs = std::filesystem;

class SecretFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("hs-secret-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& bytes) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << bytes;
    return p.string();
  }
  fs::path dir_;
};

std::string text_of(const hyperscsi::base::SecretBytes& s) {
  return std::string(reinterpret_cast<const char*>(s.span().data()), s.size());
}

TEST_F(SecretFile, ReadsTheBytesWithOneTrailingNewlineRemoved) {
  auto r = read_secret_file(write("k", "0123456789abcdef\n"), 16);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(text_of(*r), "0123456789abcdef");
  auto two = read_secret_file(write("k2", "0123456789abcdef\n\n"), 16);
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(text_of(*two), "0123456789abcdef\n");  // only one newline is the file's ending
  auto binary = read_secret_file(write("k3", std::string("\0\x01\xff", 3) + "0123456789abc"), 16);
  ASSERT_TRUE(binary.ok());
  EXPECT_EQ(binary->size(), 16u);
}

TEST_F(SecretFile, AMissingFileIsCannotOpenNamingThePath) {
  const std::string path = (dir_ / "absent").string();
  auto r = read_secret_file(path, 16);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, SecretFileErrorKind::kCannotOpen);
  EXPECT_NE(r.error().message.find("cannot read secret file '" + path + "'"), std::string::npos);
  EXPECT_NE(r.error().message.find("No such file"), std::string::npos);
}

TEST_F(SecretFile, ADirectoryIsCannotRead) {
  auto r = read_secret_file(dir_.string(), 16);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, SecretFileErrorKind::kCannotRead);
  EXPECT_NE(r.error().message.find(dir_.string()), std::string::npos);
}

TEST_F(SecretFile, EmptyAndShortFilesAreTooSmall) {
  for (const std::string& bytes : {std::string(), std::string("\n"), std::string("0123456789abcde"),
                                   std::string("0123456789abcde\n")}) {
    auto r = read_secret_file(write("short", bytes), 16);
    ASSERT_FALSE(r.ok()) << bytes.size();
    EXPECT_EQ(r.error().kind, SecretFileErrorKind::kTooSmall);
    EXPECT_NE(r.error().message.find("fewer than 16 bytes"), std::string::npos);
    // The message names the file, never its contents.
    EXPECT_TRUE(bytes.size() < 2 || r.error().message.find("0123") == std::string::npos);
  }
}

TEST_F(SecretFile, TheSizeLimitCountsBytesWithoutTheTrailingNewline) {
  const std::string at_limit(kMaxSecretFileSize, 'x');
  auto ok = read_secret_file(write("max", at_limit + "\n"), 16);
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(ok->size(), kMaxSecretFileSize);
  for (const std::string& bytes : {at_limit + "y", at_limit + "y\n", std::string(100000, 'z')}) {
    auto r = read_secret_file(write("big", bytes), 16);
    ASSERT_FALSE(r.ok()) << bytes.size();
    EXPECT_EQ(r.error().kind, SecretFileErrorKind::kTooLarge);
    EXPECT_NE(r.error().message.find("larger than 4096 bytes"), std::string::npos);
  }
}

}  // namespace
