using System.Text.Json;
using System.Text.Json.Serialization;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;

namespace LongCtx.Models;

/// <summary>The bundled demo: a small torch-style decoder (2 layers, hidden 64, 4 q heads / 2 kv heads, head_dim 16, vocab 128).</summary>
public static class DemoModel
{
    public static DecoderConfig Config { get; } = new(Layers: 2, Hidden: 64, Heads: 4, KvHeads: 2, HeadDim: 16, Vocab: 128,
        RopeTheta: 10000, MaxPositions: 256, Dtype: ModelDtype.Float32, Seed: 20240101);

    public static Model Build() => TorchStyleDecoder.Build(Config);

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    /// <summary>Writes <c>model.onnx</c> (weights inline, ~0.5 MB) and <c>config.json</c> (the <see cref="DecoderConfig"/> plus form and I/O names) to <paramref name="folder"/>.</summary>
    public static void WriteTo(string folder)
    {
        Directory.CreateDirectory(folder);
        OnnxWriter.Save(Build(), Path.Combine(folder, "model.onnx"), new SaveOptions { AllInline = true });
        File.WriteAllText(Path.Combine(folder, "config.json"), ConfigJson(Config, "torch"));
    }

    /// <summary>config.json text describing a built model.</summary>
    public static string ConfigJson(DecoderConfig c, string form) => JsonSerializer.Serialize(new
    {
        form,
        architecture = "llama",
        num_hidden_layers = c.Layers,
        hidden_size = c.Hidden,
        num_attention_heads = c.Heads,
        num_key_value_heads = c.KvHeads,
        head_dim = c.HeadDim,
        intermediate_size = c.Mlp,
        vocab_size = c.Vocab,
        rope_theta = c.RopeTheta,
        rotary_dim = c.Rotary,
        rope_interleaved = c.Interleaved,
        max_position_embeddings = c.MaxPositions,
        rms_norm_eps = c.RmsEpsilon,
        torch_dtype = c.Dtype == ModelDtype.Float16 ? "float16" : "float32",
        seed = c.Seed,
        inputs = new[] { "input_ids", "attention_mask", "position_ids", "past_key_values.N.key", "past_key_values.N.value" },
        outputs = new[] { "logits", "present.N.key", "present.N.value" },
    }, Json) + "\n";
}
