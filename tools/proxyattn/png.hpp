// A minimal PNG writer (8-bit grayscale, zlib-compressed), for the demo's mask pictures.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace proxyattn::tool {

// Writes a width x height grayscale image (row-major, 0 black .. 255 white) to path; throws
// std::runtime_error naming the path when it cannot.
void write_png(const std::string& path, int width, int height, const std::vector<std::uint8_t>& pixels);

}  // namespace proxyattn::tool
