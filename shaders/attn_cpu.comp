// attn_cpu.comp — attention for CPU Vulkan implementations, fp32 (see attention.glsl).
#version 450
#define QKV_F16 0
#define DIRECT 1
#include "attention.glsl"
