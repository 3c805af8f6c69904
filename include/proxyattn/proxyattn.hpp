// proxyattn: ProxyAttn block-sparse attention for long-context prefill.
//
//   proxyattn::Plan plan(proxyattn::Config{}, problem);   // sizes the workspace once
//   proxyattn::attention(plan, q, k, v, out, lse);         // stages 1-4
#pragma once

#include "proxyattn/attention.hpp"
#include "proxyattn/buffer.hpp"
#include "proxyattn/config.hpp"
#include "proxyattn/error.hpp"
#include "proxyattn/mask.hpp"
#include "proxyattn/metrics.hpp"
#include "proxyattn/plan.hpp"
#include "proxyattn/tensor.hpp"
