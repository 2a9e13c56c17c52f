using LongCtx.Runtime.KvStore;

namespace LongCtx.Tests.KvStore;

/// <summary>Synthetic KV snapshots shaped like real caches: per-channel offsets plus a slow random walk over tokens.</summary>
internal static class KvFixtures
{
    public static KvSnapshot Snapshot(int layers, int heads, int dim, int length, int seed = 1, string hash = "model-a", float scale = 1f)
    {
        var rng = new Random(seed);
        float[] Make()
        {
            var a = new float[heads * length * dim];
            for (int h = 0; h < heads; h++)
                for (int d = 0; d < dim; d++)
                {
                    float offset = (float)(rng.NextDouble() * 4 - 2) * scale, walk = 0;
                    for (int t = 0; t < length; t++)
                    {
                        walk += (float)(rng.NextDouble() - 0.5) * 0.3f * scale;
                        a[(h * length + t) * dim + d] = offset + walk + (float)(rng.NextDouble() - 0.5) * 0.1f * scale;
                    }
                }
            return a;
        }
        var keys = new float[layers][];
        var values = new float[layers][];
        for (int l = 0; l < layers; l++) { keys[l] = Make(); values[l] = Make(); }
        var tokens = Enumerable.Range(0, length).Select(i => (i * 7 + seed) % 256).ToArray();
        return new KvSnapshot(hash, layers, heads, dim, tokens, length, keys, values);
    }

    /// <summary>Largest |x| over the (chunk, layer, K/V, channel) group of each element: what cachegen's bound scales with.</summary>
    public static float ChunkChannelMax(float[] a, int heads, int length, int dim, int chunk, int h, int t, int d)
    {
        int start = t / chunk * chunk, end = Math.Min(length, start + chunk);
        float m = 0;
        for (int u = start; u < end; u++) m = Math.Max(m, Math.Abs(a[(h * length + u) * dim + d]));
        return m;
    }
}
