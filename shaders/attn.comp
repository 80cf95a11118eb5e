// attn.comp — attention over fp32 q, k, v (see attention.glsl).
#version 450
#define QKV_F16 0
#define DIRECT 0
#include "attention.glsl"
