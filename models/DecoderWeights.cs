namespace LongCtx.Models;

/// <summary>One layer's weights; projections are [in, out] (already transposed for MatMul).</summary>
public sealed record LayerWeights(float[] InputNorm, float[] Q, float[] K, float[] V, float[] O, float[] PostNorm, float[] Gate, float[] Up, float[] Down);

/// <summary>
/// All weights of a Llama-style decoder, drawn in one fixed order from the config's seed. Every form builds from the
/// same draw, so for the same config the forms compute the same function (the cross-form test checks it).
/// </summary>
public sealed record DecoderWeights(float[] Embed, IReadOnlyList<LayerWeights> Layers, float[] FinalNorm, float[] LmHead)
{
    public static DecoderWeights Draw(DecoderConfig c)
    {
        var r = new SeededWeights(c.Seed);
        float[] W(int rows, int cols) => r.Uniform(rows * cols, 1f / MathF.Sqrt(rows));
        float[] N() => r.Around(c.Hidden, 1f, 0.1f);
        var embed = r.Uniform(c.Vocab * c.Hidden, 1f);
        var layers = new List<LayerWeights>();
        for (int l = 0; l < c.Layers; l++)
            layers.Add(new LayerWeights(N(), W(c.Hidden, c.QueryWidth), W(c.Hidden, c.KvWidth), W(c.Hidden, c.KvWidth), W(c.QueryWidth, c.Hidden),
                N(), W(c.Hidden, c.Mlp), W(c.Hidden, c.Mlp), W(c.Mlp, c.Hidden)));
        return new DecoderWeights(embed, layers, N(), W(c.Hidden, c.Vocab));
    }
}
