#include "muninn/core/mapped_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace muninn {
namespace {

class MappedFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("muninn_mmap_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& bytes) {
    const auto p = (dir_ / name).string();
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  }
  std::filesystem::path dir_;
};

TEST_F(MappedFileTest, MapsContents) {
  auto f = MappedFile::Open(Write("a.bin", "hello"));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->size(), 5u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>((*f)->data()), 5), "hello");
  auto r = (*f)->Range(1, 3);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[0], 'e');
}

TEST_F(MappedFileTest, EmptyFile) {
  auto f = MappedFile::Open(Write("empty.bin", ""));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->size(), 0u);
  EXPECT_TRUE((*f)->Range(0, 0).ok());
  EXPECT_EQ((*f)->Range(0, 1).status().code(), StatusCode::kOutOfRange);
}

TEST_F(MappedFileTest, ShortFileRangesAreChecked) {
  auto f = MappedFile::Open(Write("short.bin", "abc"));
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE((*f)->Range(3, 0).ok());
  EXPECT_EQ((*f)->Range(2, 2).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ((*f)->Range(4, 0).status().code(), StatusCode::kOutOfRange);
  // Offsets that would overflow when added must not wrap around.
  EXPECT_EQ((*f)->Range(~uint64_t{0}, 2).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ((*f)->Range(1, ~uint64_t{0}).status().code(), StatusCode::kOutOfRange);
}

TEST_F(MappedFileTest, MissingFileAndDirectory) {
  auto f = MappedFile::Open((dir_ / "nope").string());
  EXPECT_EQ(f.status().code(), StatusCode::kNotFound);
  EXPECT_NE(f.status().message().find("nope"), std::string_view::npos);
  EXPECT_EQ(MappedFile::Open(dir_.string()).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace muninn
