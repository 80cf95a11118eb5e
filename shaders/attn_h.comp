// attn_h.comp — attention over f16 q, k, v, f16 output, fp32 arithmetic (see attention.glsl).
#version 450
#define QKV_F16 1
#define DIRECT 0
#include "attention.glsl"
