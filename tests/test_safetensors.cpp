// Tests for the tool's safetensors reader and writer: round trips, and every kind of malformed file
// the reader must refuse with a FormatError (never a crash or a huge allocation).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "safetensors.hpp"

namespace {

namespace fs = std::filesystem;
using proxyattn::DType;
using proxyattn::tool::FormatError;
using proxyattn::tool::StTensor;
using proxyattn::tool::find;
using proxyattn::tool::read_safetensors;
using proxyattn::tool::write_safetensors;

template <class T>
std::vector<std::uint8_t> to_bytes(const std::vector<T>& values) {  // the hosts we test on are little-endian
  std::vector<std::uint8_t> bytes(values.size() * sizeof(T));
  if (!bytes.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

template <class T>
std::vector<T> from_bytes(const std::vector<std::uint8_t>& bytes) {
  std::vector<T> values(bytes.size() / sizeof(T));
  if (!values.empty()) std::memcpy(values.data(), bytes.data(), values.size() * sizeof(T));
  return values;
}

std::string le64(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    std::random_device random;
    dir_ = fs::temp_directory_path() /
           ("proxyattn_st_test_" + std::to_string(random()) + "_" + std::to_string(counter++));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Writes raw bytes to a file in the temp dir and returns its path.
  std::string raw_file(const std::string& contents) {
    const std::string p = path("raw" + std::to_string(files_++) + ".safetensors");
    std::ofstream out(p, std::ios::binary);
    out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
    return p;
  }
  // A file with a correct header length, the given header text and `data_size` zero bytes of data.
  std::string file_with_header(const std::string& header, std::size_t data_size = 0) {
    return raw_file(le64(header.size()) + header + std::string(data_size, '\0'));
  }

  // Reading `p` must throw a FormatError whose message names the file and contains `expected`.
  void expect_error(const std::string& p, const std::string& expected) {
    try {
      read_safetensors(p);
      ADD_FAILURE() << "no FormatError for " << p << " (expected \"" << expected << "\")";
    } catch (const FormatError& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(p), std::string::npos) << message;
      EXPECT_NE(message.find(expected), std::string::npos)
          << "message: " << message << "\nexpected to contain: " << expected;
    }
  }
  void expect_header_error(const std::string& header, const std::string& expected,
                           std::size_t data_size = 0) {
    SCOPED_TRACE(header.substr(0, 200));
    expect_error(file_with_header(header, data_size), expected);
  }

  fs::path dir_;
  int files_ = 0;
};

std::vector<StTensor> sample_tensors() {
  std::vector<StTensor> tensors;
  tensors.push_back({"q", DType::float32, {2, 3},
                     to_bytes<float>({1.5f, -2.25f, 3.14159f, 1e-20f, -0.0f, 65504.0f})});
  // bfloat16 bit patterns: 1.0, -3.0, +inf, a subnormal.
  tensors.push_back({"k", DType::bfloat16, {4}, to_bytes<std::uint16_t>({0x3F80, 0xC040, 0x7F80, 0x0001})});
  // float16 bit patterns: 1.0, -1.0, 65504, 2^-24.
  tensors.push_back({"v", DType::float16, {1, 2, 2}, to_bytes<std::uint16_t>({0x3C00, 0xBC00, 0x7BFF, 0x0001})});
  tensors.push_back({"idx", DType::int32, {2, 2, 1, 1},
                     to_bytes<std::int32_t>({INT32_MIN, -1, 0, 123456789})});
  tensors.push_back({"big", DType::int64, {3}, to_bytes<std::int64_t>({INT64_MIN, 42, INT64_MAX})});
  tensors.push_back({"empty", DType::float32, {0, 5}, {}});
  return tensors;
}

TEST_F(SafetensorsTest, RoundTripKeepsNamesDtypesShapesAndValues) {
  const std::vector<StTensor> written = sample_tensors();
  const std::string p = path("round.safetensors");
  write_safetensors(p, written, {{"format", "pt"}, {"note", "hello \"world\""}});

  const std::vector<StTensor> read = read_safetensors(p);
  ASSERT_EQ(read.size(), written.size());
  for (const StTensor& w : written) {
    SCOPED_TRACE(w.name);
    const StTensor* r = find(read, w.name);
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(r->dtype, w.dtype);
    EXPECT_EQ(r->shape, w.shape);
    EXPECT_EQ(r->bytes, w.bytes);
  }
  EXPECT_EQ(find(read, "missing"), nullptr);

  // Spot-check decoded values, not only bytes.
  const std::vector<float> q = from_bytes<float>(find(read, "q")->bytes);
  ASSERT_EQ(q.size(), 6u);
  EXPECT_EQ(q[0], 1.5f);
  EXPECT_EQ(q[2], 3.14159f);
  EXPECT_EQ(q[5], 65504.0f);
  EXPECT_EQ(from_bytes<std::uint16_t>(find(read, "k")->bytes)[2], 0x7F80);
  EXPECT_EQ(from_bytes<std::int32_t>(find(read, "idx")->bytes)[0], INT32_MIN);
  EXPECT_EQ(from_bytes<std::int64_t>(find(read, "big")->bytes)[2], INT64_MAX);

  // Tensors come back in data order, which is the order they were written in.
  for (std::size_t i = 0; i < written.size(); ++i) EXPECT_EQ(read[i].name, written[i].name);

  // The file layout: length, 8-byte aligned header holding the metadata, then the data, no more.
  const std::string file = slurp(p);
  ASSERT_GE(file.size(), 8u);
  std::uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | static_cast<unsigned char>(file[i]);
  EXPECT_EQ(header_size % 8, 0u);
  std::size_t data_size = 0;
  for (const StTensor& t : written) data_size += t.bytes.size();
  EXPECT_EQ(file.size(), 8 + header_size + data_size);
  const std::string header = file.substr(8, header_size);
  EXPECT_NE(header.find(R"("__metadata__":{"format":"pt","note":"hello \"world\""})"), std::string::npos)
      << header;
  EXPECT_NE(header.find(R"("k":{"data_offsets":[24,32],"dtype":"BF16","shape":[4]})"), std::string::npos)
      << header;
}

TEST_F(SafetensorsTest, ViewIsContiguousOverTheBytes) {
  std::vector<StTensor> tensors = sample_tensors();
  proxyattn::TensorView v = tensors[3].view();  // int32 [2, 2, 1, 1]
  EXPECT_EQ(v.data, tensors[3].bytes.data());
  EXPECT_EQ(v.dtype, DType::int32);
  EXPECT_EQ(v.device, proxyattn::Device::cpu);
  ASSERT_EQ(v.ndim, 4);
  EXPECT_EQ(v.shape[0], 2);
  EXPECT_EQ(v.shape[1], 2);
  EXPECT_EQ(v.stride[0], 2);
  EXPECT_EQ(v.stride[1], 1);
  EXPECT_EQ(v.stride[3], 1);
  EXPECT_EQ(v.numel(), 4);
  EXPECT_EQ(v.as<std::int32_t>()[3], 123456789);

  proxyattn::TensorView q = tensors[0].view();  // float32 [2, 3]
  EXPECT_EQ(q.stride[0], 3);
  EXPECT_EQ(q.as<float>()[1], -2.25f);

  StTensor scalar{"s", DType::float32, {}, to_bytes<float>({7.0f})};
  EXPECT_THROW(scalar.view(), FormatError);
  StTensor wrong_size{"w", DType::float32, {2}, to_bytes<float>({1.0f})};
  EXPECT_THROW(wrong_size.view(), FormatError);
}

TEST_F(SafetensorsTest, ScalarRoundTrips) {
  const std::string p = path("scalar.safetensors");
  write_safetensors(p, {{"s", DType::float32, {}, to_bytes<float>({7.0f})}});
  const auto read = read_safetensors(p);
  ASSERT_EQ(read.size(), 1u);
  EXPECT_TRUE(read[0].shape.empty());
  EXPECT_EQ(from_bytes<float>(read[0].bytes), std::vector<float>{7.0f});
}

// A file written by hand, not by our writer: unsorted offsets, overlapping tensors, metadata,
// trailing spaces in the header.
TEST_F(SafetensorsTest, ReadsHandWrittenFileWithOverlaps) {
  const std::string header =
      R"({"b":{"dtype":"I32","shape":[2],"data_offsets":[8,16]},)"
      R"("a":{"dtype":"I32","shape":[1,2],"data_offsets":[0,8]},)"
      R"("alias":{"dtype":"F32","shape":[3],"data_offsets":[4,16]},)"
      R"("__metadata__":{"k":"v"}}   )";
  const std::string data = std::string(reinterpret_cast<const char*>(to_bytes<std::int32_t>({10, 20, 30, 40}).data()), 16);
  const auto read = read_safetensors(raw_file(le64(header.size()) + header + data));
  ASSERT_EQ(read.size(), 3u);
  EXPECT_EQ(read[0].name, "a");
  EXPECT_EQ(read[1].name, "alias");
  EXPECT_EQ(read[2].name, "b");
  EXPECT_EQ(read[0].shape, (std::vector<std::int64_t>{1, 2}));
  EXPECT_EQ(from_bytes<std::int32_t>(read[0].bytes), (std::vector<std::int32_t>{10, 20}));
  EXPECT_EQ(from_bytes<std::int32_t>(read[2].bytes), (std::vector<std::int32_t>{30, 40}));
  EXPECT_EQ(from_bytes<std::int32_t>(read[1].bytes), (std::vector<std::int32_t>{20, 30, 40}));
  EXPECT_EQ(read[1].dtype, DType::float32);
}

TEST_F(SafetensorsTest, EmptyHeaderObjectGivesNoTensors) {
  EXPECT_TRUE(read_safetensors(file_with_header("{}")).empty());
}

TEST_F(SafetensorsTest, MissingFileAndDirectory) {
  expect_error(path("does_not_exist.safetensors"), "cannot open");
  expect_error(dir_.string(), "not a regular file");
}

TEST_F(SafetensorsTest, TruncatedFile) {
  expect_error(raw_file(""), "too short");
  expect_error(raw_file(std::string("\x10\0\0\0\0", 5)), "file is 5 bytes, too short");
  // A valid file cut in the middle of its data.
  const std::string p = path("full.safetensors");
  write_safetensors(p, sample_tensors());
  const std::string file = slurp(p);
  expect_error(raw_file(file.substr(0, file.size() - 3)), "past the end of the data section");
  // ... and cut in the middle of its header.
  expect_error(raw_file(file.substr(0, 20)), "exceeds the 12 bytes after the length field");
}

TEST_F(SafetensorsTest, HugeHeaderLength) {
  expect_error(raw_file(le64(1000) + "{}"), "exceeds the 2 bytes after the length field");
  expect_error(raw_file(le64(100'000'001) + "{}"), "exceeds the limit");
  expect_error(raw_file(le64(UINT64_MAX) + "{}"), "exceeds the limit");
  expect_error(raw_file(le64(std::uint64_t{1} << 63) + "{}"), "exceeds the limit");
}

TEST_F(SafetensorsTest, BadJson) {
  expect_header_error(R"({"a": )", "not valid JSON");
  expect_header_error(R"({"a":{"dtype":"F32",}})", "not valid JSON");
  expect_header_error("", "not valid JSON");
  expect_header_error(R"({} trailing)", "not valid JSON");
  expect_header_error("{\"\xff\xfe\":1}", "not valid JSON");  // invalid UTF-8
  expect_header_error(R"({"a":{"dtype":"F32","shape":[1e999],"data_offsets":[0,4]}})",
                      "not valid JSON", 4);  // number overflow, a different nlohmann exception
  expect_header_error(std::string(100000, '['), "nests deeper");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[[[[[[[[1]]]]]]]],"data_offsets":[0,4]}})",
                      "nests deeper");
}

TEST_F(SafetensorsTest, HeaderNotAnObject) {
  expect_header_error("[1, 2]", "must be a JSON object, got array");
  expect_header_error("42", "must be a JSON object, got number");
  expect_header_error(R"("text")", "must be a JSON object, got string");
}

TEST_F(SafetensorsTest, EntryNotAnObjectOrMissingFields) {
  expect_header_error(R"({"a":5})", "tensor 'a': entry must be an object, got number");
  expect_header_error(R"({"a":[1]})", "entry must be an object, got array");
  expect_header_error(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", "tensor 'a': missing \"dtype\"", 4);
  expect_header_error(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", "missing \"shape\"", 4);
  expect_header_error(R"({"a":{"dtype":"F32","shape":[1]}})", "missing \"data_offsets\"", 4);
}

TEST_F(SafetensorsTest, BadDtype) {
  expect_header_error(R"({"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})",
                      "unsupported dtype \"F64\"", 8);
  expect_header_error(R"({"a":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})",
                      "unsupported dtype", 4);
  expect_header_error(R"({"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})",
                      "\"dtype\" must be a string", 4);
}

TEST_F(SafetensorsTest, BadShape) {
  expect_header_error(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",
                      "shape[0] is -1, expected a non-negative integer", 4);
  expect_header_error(R"({"a":{"dtype":"F32","shape":[2,1.5],"data_offsets":[0,4]}})",
                      "shape[1] is 1.5", 4);
  expect_header_error(R"({"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,4]}})", "shape[0]", 4);
  expect_header_error(R"({"a":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,4]}})",
                      "shape[0]", 4);
  expect_header_error(R"({"a":{"dtype":"F32","shape":3,"data_offsets":[0,4]}})",
                      "\"shape\" must be an array", 4);
  expect_header_error(R"({"a":{"dtype":"F32","shape":[1,1,1,1,1],"data_offsets":[0,4]}})",
                      "rank 5 exceeds the maximum of 4", 4);
  // numel overflows int64, and numel fits but the byte size does not.
  expect_header_error(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})",
                      "larger than 2^63-1 bytes", 4);
  expect_header_error(R"({"a":{"dtype":"F32","shape":[2305843009213693952],"data_offsets":[0,4]}})",
                      "larger than 2^63-1 bytes", 4);
}

TEST_F(SafetensorsTest, BadOffsets) {
  expect_header_error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})",
                      "\"data_offsets\" must be [begin, end]", 4);
  expect_header_error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":{"b":0}}})",
                      "\"data_offsets\" must be [begin, end]", 4);
  expect_header_error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})",
                      "must be two non-negative integers", 4);
  expect_header_error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":["0","4"]}})",
                      "must be two non-negative integers", 4);
  expect_header_error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})",
                      "begin 8 is after end 4", 8);
}

TEST_F(SafetensorsTest, OffsetsPastEnd) {
  expect_header_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                      "data_offsets end 8 is past the end of the data section (4 bytes)", 4);
  expect_header_error(
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[9223372036854775800,9223372036854775804]}})",
      "past the end of the data section", 4);
}

TEST_F(SafetensorsTest, SizeMismatch) {
  expect_header_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})",
                      "data_offsets span 4 bytes but F32[2] needs 8", 16);
  expect_header_error(R"({"a":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,16]}})",
                      "data_offsets span 16 bytes but BF16[2, 2] needs 8", 16);
}

TEST_F(SafetensorsTest, BadMetadata) {
  expect_header_error(R"({"__metadata__":[1]})", "\"__metadata__\" must be an object");
  expect_header_error(R"({"__metadata__":{"n":1}})", "value of 'n' must be a string");
}

TEST_F(SafetensorsTest, TooMuchAliasingIsRefusedBeforeAllocating) {
  // 1 MiB of data, claimed 1100 times: over 1 GiB of copies from a 1 MiB file.
  std::string header = "{";
  for (int i = 0; i < 1100; ++i)
    header += (i ? "," : "") + std::string("\"t") + std::to_string(i) +
              R"(":{"dtype":"I32","shape":[262144],"data_offsets":[0,1048576]})";
  header += "}";
  expect_header_error(header, "overlapping tensors add up to more", 1 << 20);
}

TEST_F(SafetensorsTest, WriterRefusesBadTensors) {
  const std::string p = path("bad.safetensors");
  EXPECT_THROW(write_safetensors(p, {{"a", DType::float32, {3}, to_bytes<float>({1.0f, 2.0f})}}),
               FormatError);
  EXPECT_THROW(write_safetensors(p, {{"a", DType::bfloat16, {2}, to_bytes<float>({1.0f, 2.0f})}}),
               FormatError);
  EXPECT_THROW(write_safetensors(p, {{"a", DType::float32, {-1}, {}}}), FormatError);
  EXPECT_THROW(write_safetensors(p, {{"a", DType::float32, {1, 1, 1, 1, 1}, to_bytes<float>({1.0f})}}),
               FormatError);
  const StTensor one{"a", DType::float32, {1}, to_bytes<float>({1.0f})};
  EXPECT_THROW(write_safetensors(p, {one, one}), FormatError);
  EXPECT_THROW(write_safetensors(p, {{"__metadata__", DType::float32, {1}, to_bytes<float>({1.0f})}}),
               FormatError);
  EXPECT_THROW(write_safetensors(path("no/such/dir/x.safetensors"), {one}), FormatError);
  try {
    write_safetensors(p, {{"a", DType::float32, {3}, to_bytes<float>({1.0f, 2.0f})}});
    ADD_FAILURE() << "no FormatError";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("has 8 bytes but F32[3] needs 12"), std::string::npos)
        << e.what();
  }
}

}  // namespace
