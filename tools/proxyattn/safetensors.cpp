#include "safetensors.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <limits>
#include <optional>
#include <system_error>
#include <tuple>

#include <nlohmann/json.hpp>

namespace proxyattn::tool {
namespace {

using nlohmann::json;

// The reference implementation refuses headers over 100 MB; so do we. The parsed JSON costs a small
// multiple of the header size, so this also bounds the memory spent on parsing.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;
// A valid header nests three containers deep (root, entry, shape). Deeper nesting is malformed, and
// refusing it early keeps "[[[[..." from building millions of nested values.
constexpr int kMaxJsonDepth = 8;
// Tensors may overlap, so their copies can add up to more than the file. Allow that, but only by
// this much, so that a small file cannot make us allocate an absurd amount.
constexpr std::uint64_t kMaxAliasedBytes = std::uint64_t{1} << 30;
constexpr std::int64_t kInt64Max = std::numeric_limits<std::int64_t>::max();

struct DTypeName {
  const char* name;
  DType dtype;
};
constexpr DTypeName kDTypes[] = {{"F32", DType::float32},
                                 {"F16", DType::float16},
                                 {"BF16", DType::bfloat16},
                                 {"I32", DType::int32},
                                 {"I64", DType::int64}};

std::optional<DType> parse_dtype(const std::string& name) {
  for (const DTypeName& d : kDTypes)
    if (name == d.name) return d.dtype;
  return std::nullopt;
}

const char* st_dtype_name(DType dtype) {
  for (const DTypeName& d : kDTypes)
    if (dtype == d.dtype) return d.name;
  return "?";
}

// Names and values come from the file; cut them short so that messages stay readable.
std::string brief(const std::string& text) {
  return text.size() <= 60 ? text : text.substr(0, 60) + "...";
}
std::string brief(const json& value) { return brief(value.dump()); }

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw FormatError("safetensors file '" + path + "': " + what);
}

// The byte size of a tensor, or nullopt if a dimension is negative or the size overflows int64.
std::optional<std::int64_t> byte_size(const std::vector<std::int64_t>& shape, DType dtype) {
  std::int64_t numel = 1;
  for (std::int64_t extent : shape) {
    if (extent < 0) return std::nullopt;
    if (extent != 0 && numel > kInt64Max / extent) return std::nullopt;
    numel *= extent;
  }
  const auto size = static_cast<std::int64_t>(dtype_size(dtype));
  if (numel > kInt64Max / size) return std::nullopt;
  return numel * size;
}

// A JSON integer in [0, INT64_MAX], else nullopt (negative, fractional, too large or not a number).
std::optional<std::int64_t> non_negative(const json& value) {
  if (value.is_number_unsigned()) {
    const auto v = value.get<std::uint64_t>();
    if (v <= static_cast<std::uint64_t>(kInt64Max)) return static_cast<std::int64_t>(v);
  } else if (value.is_number_integer()) {
    const auto v = value.get<std::int64_t>();
    if (v >= 0) return v;
  }
  return std::nullopt;
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

struct Entry {
  StTensor tensor;  // bytes not read yet
  std::int64_t begin = 0;
  std::int64_t size = 0;
};

// Checks one tensor entry of the header against the data section of `data_size` bytes.
Entry parse_entry(const std::string& path, const std::string& name, const json& entry,
                  std::uint64_t data_size) {
  const std::string where = "tensor '" + brief(name) + "': ";
  if (!entry.is_object())
    fail(path, where + "entry must be an object, got " + entry.type_name());
  Entry out;
  out.tensor.name = name;

  const auto dtype = entry.find("dtype");
  if (dtype == entry.end()) fail(path, where + "missing \"dtype\"");
  if (!dtype->is_string()) fail(path, where + "\"dtype\" must be a string, got " + brief(*dtype));
  const auto parsed = parse_dtype(dtype->get<std::string>());
  if (!parsed)
    fail(path, where + "unsupported dtype " + brief(*dtype) + " (expected F32, F16, BF16, I32 or I64)");
  out.tensor.dtype = *parsed;

  const auto shape = entry.find("shape");
  if (shape == entry.end()) fail(path, where + "missing \"shape\"");
  if (!shape->is_array()) fail(path, where + "\"shape\" must be an array, got " + brief(*shape));
  if (shape->size() > static_cast<std::size_t>(TensorView::max_dims))
    fail(path, where + "rank " + std::to_string(shape->size()) + " exceeds the maximum of " +
                   std::to_string(TensorView::max_dims));
  for (std::size_t i = 0; i < shape->size(); ++i) {
    const auto extent = non_negative((*shape)[i]);
    if (!extent)
      fail(path, where + "shape[" + std::to_string(i) + "] is " + brief((*shape)[i]) +
                     ", expected a non-negative integer");
    out.tensor.shape.push_back(*extent);
  }
  const auto size = byte_size(out.tensor.shape, out.tensor.dtype);
  if (!size)
    fail(path, where + "shape " + shape_text(out.tensor.shape) + " of " + st_dtype_name(*parsed) +
                   " is larger than 2^63-1 bytes");
  out.size = *size;

  const auto offsets = entry.find("data_offsets");
  if (offsets == entry.end()) fail(path, where + "missing \"data_offsets\"");
  if (!offsets->is_array() || offsets->size() != 2)
    fail(path, where + "\"data_offsets\" must be [begin, end], got " + brief(*offsets));
  const auto begin = non_negative((*offsets)[0]);
  const auto end = non_negative((*offsets)[1]);
  if (!begin || !end)
    fail(path, where + "\"data_offsets\" must be two non-negative integers, got " + brief(*offsets));
  if (*begin > *end)
    fail(path, where + "data_offsets begin " + std::to_string(*begin) + " is after end " +
                   std::to_string(*end));
  if (static_cast<std::uint64_t>(*end) > data_size)
    fail(path, where + "data_offsets end " + std::to_string(*end) +
                   " is past the end of the data section (" + std::to_string(data_size) + " bytes)");
  if (*end - *begin != *size)
    fail(path, where + "data_offsets span " + std::to_string(*end - *begin) + " bytes but " +
                   st_dtype_name(*parsed) + shape_text(out.tensor.shape) + " needs " +
                   std::to_string(*size));
  out.begin = *begin;
  return out;
}

// Reads exactly `size` bytes at `offset` into `data` (`what` names them for the message), or fails.
using ReadAt = std::function<void(std::uint64_t offset, void* data, std::uint64_t size, const std::string& what)>;

// The whole format, over a source of `file_size` bytes (a file, or memory for the fuzzer).
std::vector<StTensor> parse(const std::string& path, std::uint64_t file_size, const ReadAt& read_at);

}  // namespace

TensorView StTensor::view() {
  if (shape.empty() || shape.size() > static_cast<std::size_t>(TensorView::max_dims))
    throw FormatError("tensor '" + brief(name) + "': rank " + std::to_string(shape.size()) +
                      " cannot be viewed; the library needs rank 1.." +
                      std::to_string(TensorView::max_dims));
  const auto size = byte_size(shape, dtype);
  if (!size || static_cast<std::uint64_t>(*size) != bytes.size())
    throw FormatError("tensor '" + brief(name) + "': " + std::to_string(bytes.size()) +
                      " bytes do not match " + st_dtype_name(dtype) + shape_text(shape));
  TensorView view;
  view.data = bytes.data();
  view.dtype = dtype;
  view.ndim = static_cast<int>(shape.size());
  std::int64_t stride = 1;  // row-major
  for (int d = view.ndim - 1; d >= 0; --d) {
    view.shape[d] = shape[d];
    view.stride[d] = stride;
    stride *= shape[d];
  }
  return view;
}

std::vector<StTensor> read_safetensors(const std::string& path) {
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int error = errno;
    fail(path, "cannot open for reading" +
                   (error ? " (" + std::generic_category().message(error) + ")" : std::string()));
  }
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) fail(path, "not a regular file");
  in.seekg(0, std::ios::end);
  const std::streamoff end = in.tellg();
  if (!in || end < 0) fail(path, "cannot determine the file size");
  const auto file_size = static_cast<std::uint64_t>(end);
  return parse(path, file_size, [&](std::uint64_t offset, void* data, std::uint64_t size, const std::string& what) {
    if (size == 0) return;
    in.seekg(static_cast<std::streamoff>(offset));
    in.read(static_cast<char*>(data), static_cast<std::streamsize>(size));
    if (!in || static_cast<std::uint64_t>(in.gcount()) != size)  // the file changed or is unreadable
      fail(path, "could not read " + what + " (" + std::to_string(size) + " bytes at offset " +
                     std::to_string(offset) + ")");
  });
}

std::vector<StTensor> read_safetensors(const void* bytes, std::size_t size, const std::string& name) {
  return parse(name, size, [&](std::uint64_t offset, void* data, std::uint64_t n, const std::string& what) {
    if (offset > size || n > size - offset)
      fail(name, "could not read " + what + " (" + std::to_string(n) + " bytes at offset " + std::to_string(offset) + ")");
    if (n) std::memcpy(data, static_cast<const std::uint8_t*>(bytes) + offset, n);
  });
}

namespace {
std::vector<StTensor> parse(const std::string& path, std::uint64_t file_size, const ReadAt& read_at) {
  if (file_size < 8)
    fail(path, "file is " + std::to_string(file_size) +
                   " bytes, too short for the 8-byte header length");
  unsigned char length_bytes[8];
  read_at(0, length_bytes, 8, "the header length");
  std::uint64_t header_size = 0;  // little-endian, whatever the host order
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | length_bytes[i];
  if (header_size > kMaxHeaderBytes)
    fail(path, "header length " + std::to_string(header_size) + " exceeds the limit of " +
                   std::to_string(kMaxHeaderBytes) + " bytes");
  if (header_size > file_size - 8)
    fail(path, "header length " + std::to_string(header_size) + " exceeds the " +
                   std::to_string(file_size - 8) + " bytes after the length field");
  const std::uint64_t data_start = 8 + header_size;
  const std::uint64_t data_size = file_size - data_start;

  std::string text(header_size, '\0');
  read_at(8, text.data(), header_size, "the header");
  json header;
  try {
    // The callback only enforces the nesting limit; it keeps every value.
    header = json::parse(text, [&](int depth, json::parse_event_t event, json&) {
      if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
          depth >= kMaxJsonDepth)
        fail(path, "header JSON nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
      return true;
    });
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 1e999
    fail(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object())
    fail(path, std::string("header must be a JSON object, got ") + header.type_name());

  // A repeated tensor name cannot be detected here: nlohmann::json keeps only the last value of a
  // repeated key while parsing, so such a file reads as if the earlier entries were absent.
  std::vector<Entry> entries;
  std::uint64_t total = 0;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object())
        fail(path, std::string("\"__metadata__\" must be an object, got ") + entry.type_name());
      for (const auto& [key, value] : entry.items())
        if (!value.is_string())
          fail(path, "\"__metadata__\" value of '" + brief(key) + "' must be a string, got " +
                         brief(value));
      continue;
    }
    entries.push_back(parse_entry(path, name, entry, data_size));
    const auto size = static_cast<std::uint64_t>(entries.back().size);
    if (size > data_size + kMaxAliasedBytes - total)
      fail(path, "overlapping tensors add up to more than the data section (" +
                     std::to_string(data_size) + " bytes) plus " + std::to_string(kMaxAliasedBytes));
    total += size;
  }

  // The JSON object has lost the file's key order; data order is the natural order to return.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.tensor.name) < std::tie(b.begin, b.tensor.name);
  });
  std::vector<StTensor> tensors;
  tensors.reserve(entries.size());
  for (Entry& e : entries) {
    e.tensor.bytes.resize(static_cast<std::size_t>(e.size));
    read_at(data_start + static_cast<std::uint64_t>(e.begin), e.tensor.bytes.data(),
            static_cast<std::uint64_t>(e.size), "tensor '" + brief(e.tensor.name) + "'");
    tensors.push_back(std::move(e.tensor));
  }
  return tensors;
}
}  // namespace

const StTensor* find(const std::vector<StTensor>& tensors, const std::string& name) {
  for (const StTensor& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

void write_safetensors(const std::string& path, const std::vector<StTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  std::int64_t offset = 0;
  for (const StTensor& t : tensors) {
    const std::string where = "tensor '" + brief(t.name) + "': ";
    if (t.name == "__metadata__") fail(path, where + "the name is reserved for metadata");
    if (header.contains(t.name)) fail(path, where + "the name is used twice");
    if (t.shape.size() > static_cast<std::size_t>(TensorView::max_dims))
      fail(path, where + "rank " + std::to_string(t.shape.size()) + " exceeds the maximum of " +
                     std::to_string(TensorView::max_dims));
    const auto size = byte_size(t.shape, t.dtype);
    if (!size) fail(path, where + "invalid shape " + shape_text(t.shape));
    if (static_cast<std::uint64_t>(*size) != t.bytes.size())
      fail(path, where + "has " + std::to_string(t.bytes.size()) + " bytes but " +
                     st_dtype_name(t.dtype) + shape_text(t.shape) + " needs " +
                     std::to_string(*size));
    if (offset > kInt64Max - *size) fail(path, "tensors add up to more than 2^63-1 bytes");
    header[t.name] = {{"dtype", st_dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + *size}}};
    offset += *size;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;

  std::string text;
  try {
    text = header.dump();
  } catch (const json::type_error& e) {  // thrown for strings that are not valid UTF-8
    fail(path, std::string("names and metadata must be valid UTF-8: ") + e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // pad so that the data section is 8-byte aligned
  if (text.size() > kMaxHeaderBytes)
    fail(path, "header of " + std::to_string(text.size()) + " bytes exceeds the limit of " +
                   std::to_string(kMaxHeaderBytes));

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail(path, "cannot open for writing");
  char length_bytes[8];
  for (int i = 0; i < 8; ++i) length_bytes[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);
  out.write(length_bytes, 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const StTensor& t : tensors)
    out.write(reinterpret_cast<const char*>(t.bytes.data()),
              static_cast<std::streamsize>(t.bytes.size()));
  out.close();
  if (!out) fail(path, "writing failed");
}

}  // namespace proxyattn::tool
