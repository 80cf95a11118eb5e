// attn_h_cpu.comp — attention for CPU Vulkan implementations, f16 q, k, v (see attention.glsl).
#version 450
#define QKV_F16 1
#define DIRECT 1
#include "attention.glsl"
