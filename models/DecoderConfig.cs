using System.Text.Json.Serialization;

namespace LongCtx.Models;

/// <summary>Weight/activation precision of a built model.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<ModelDtype>))]
public enum ModelDtype { Float32, Float16 }

/// <summary>
/// Shape of a tiny decoder built by the builders in this project. Weights are drawn from a seeded generator, so the
/// same config (seed included) always yields byte-identical ONNX.
/// </summary>
/// <param name="RotaryDim">Rotated dimensions per head (partial rotary); null means the whole head.</param>
/// <param name="Interleaved">GPT-J style rotation of pairs (x0,x1),(x2,x3)... instead of the half-split rotate_half.</param>
/// <param name="MaxPositions">Length of the cos/sin caches (the "original max positions" of the model).</param>
/// <param name="Intermediate">MLP width; null means 3 x hidden.</param>
public sealed record DecoderConfig(
    int Layers = 2,
    int Hidden = 64,
    int Heads = 4,
    int KvHeads = 2,
    int HeadDim = 16,
    int Vocab = 128,
    double RopeTheta = 10000.0,
    int? RotaryDim = null,
    bool Interleaved = false,
    int MaxPositions = 256,
    ModelDtype Dtype = ModelDtype.Float32,
    int Seed = 1,
    int? Intermediate = null,
    double RmsEpsilon = 1e-6)
{
    public int Rotary => RotaryDim ?? HeadDim;
    public int Mlp => Intermediate ?? 3 * Hidden;
    public int QueryWidth => Heads * HeadDim;
    public int KvWidth => KvHeads * HeadDim;

    /// <summary>Throws <see cref="ArgumentException"/> naming the bad field.</summary>
    public void Validate()
    {
        void Need(bool ok, string what) { if (!ok) throw new ArgumentException($"decoder config: {what} (config: {this})"); }
        Need(Layers >= 1, "layers must be >= 1");
        Need(Hidden >= 1 && Heads >= 1 && KvHeads >= 1 && HeadDim >= 2 && Vocab >= 2, "sizes must be positive");
        Need(Heads % KvHeads == 0, $"heads ({Heads}) must be a multiple of kv heads ({KvHeads})");
        Need(Rotary >= 2 && Rotary <= HeadDim && Rotary % 2 == 0, $"rotary dim ({Rotary}) must be even and in [2, head_dim={HeadDim}]");
        Need(RopeTheta > 1, "rope theta must be > 1");
        Need(MaxPositions >= 1, "max positions must be >= 1");
    }

    /// <summary>inv_freq[i] = theta^(-2i/rotary), i &lt; rotary/2 (RoFormer, Su et al. 2021, eq. 15).</summary>
    public float[] InverseFrequencies()
    {
        var r = new float[Rotary / 2];
        for (int i = 0; i < r.Length; i++) r[i] = (float)(1.0 / Math.Pow(RopeTheta, 2.0 * i / Rotary));
        return r;
    }

    /// <summary>cos and sin caches [MaxPositions, rotary/2]: cos(p * inv_freq[i]), as the genai builders store them.</summary>
    public (float[] Cos, float[] Sin) RopeCaches()
    {
        var inv = InverseFrequencies();
        int h = inv.Length;
        var c = new float[MaxPositions * h];
        var s = new float[MaxPositions * h];
        for (int p = 0; p < MaxPositions; p++)
            for (int i = 0; i < h; i++)
            {
                // float32 product, like torch's (position_ids.float() @ inv_freq) in the exported graphs.
                float f = p * inv[i];
                c[p * h + i] = MathF.Cos(f);
                s[p * h + i] = MathF.Sin(f);
            }
        return (c, s);
    }
}
