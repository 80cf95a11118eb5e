// gemm_load.glsl — the loads the portable GEMMs share: four consecutive values of the
// activations (a) or weights (w) as a vec4, unpacked from fp16 when A_F16 stores them so.
// Included after the a[] and w[] buffer declarations of the including shader.

vec4 load_a(uint i)
{
#if A_F16
	return unpack4(a[i]);
#else
	return a[i];
#endif
}

vec4 load_w(uint i)
{
#if A_F16
	return unpack4(w[i]);
#else
	return w[i];
#endif
}
