// quant_i8.glsl — the int8 code of --precision int8's activations, shared by the quantising
// pass (quant_i8.comp) and the LayerNorm that quantises its own output (add_ln_sg.comp), so
// that both give the same codes for the same f16 values: symmetric, one scale a row,
// m / 127 with m = max |x|, each value x · (127 / m) rounded to nearest even.

const uint NO_SMOOTH = 0xffffffffu;  // no SmoothQuant factors (sinv_off)

uint pack4i(vec4 v)   // 4 values already scaled to [-127, 127]
{
	const ivec4 i = ivec4(clamp(roundEven(v), -127.0, 127.0));
	return (uint(i.x) & 0xffu) | (uint(i.y) & 0xffu) << 8 | (uint(i.z) & 0xffu) << 16 |
	       (uint(i.w) & 0xffu) << 24;
}

// 127 / m, or 0 for a row of zeros
float quant_inv(float m)
{
	return m > 0.0 ? 127.0 / m : 0.0;
}
