using System.Globalization;
using System.Text.RegularExpressions;

namespace LongCtx.Contract;

/// <summary>Whether a cache tensor goes into the graph (past) or comes out of it (present).</summary>
public enum KvRole { Past, Present }

/// <summary>Which half of a layer's cache a tensor holds.</summary>
public enum KvPart { Key, Value }

/// <summary>
/// How the cache is laid out: <see cref="Concat"/> = past [B, Hkv, P, D] in, present [B, Hkv, P+S, D] out;
/// <see cref="Static"/> = a fixed [B, L, Hkv*D] buffer in, the same buffer updated at write_indices out;
/// <see cref="Packed"/> = key and value stacked in one tensor past_N [2, B, H, P, D] in, present_N [2, B, H, P+S, D]
/// out (onnxruntime.transformers GPT-2, com.microsoft.Attention): its names have no {part}, and parse as the key.
/// </summary>
public enum KvLayout { Concat, Static, Packed }

/// <summary>
/// One naming family of KV-cache graph inputs or outputs, written as a template: <c>{layer}</c> is the layer index
/// (decimal), <c>{part}</c> is <c>key</c> or <c>value</c>. Everything else matches literally.
/// </summary>
public sealed class KvNameFamily
{
    public KvNameFamily(string template, KvRole role, KvLayout layout, string exporter)
    {
        Template = template;
        Role = role;
        Layout = layout;
        Exporter = exporter;
        Regex = new Regex("^" + Regex.Escape(template)
            .Replace(@"\{layer}", "(?<layer>[0-9]+)", StringComparison.Ordinal)
            .Replace(@"\{part}", "(?<part>key|value)", StringComparison.Ordinal) + "$", RegexOptions.CultureInvariant);
    }

    public string Template { get; }
    public KvRole Role { get; }
    public KvLayout Layout { get; }
    /// <summary>Who writes names like this (documentation; shown by tests on a failure).</summary>
    public string Exporter { get; }
    /// <summary>The anchored regex built from <see cref="Template"/> (groups "layer" and "part").</summary>
    public Regex Regex { get; }

    /// <summary>The name of layer <paramref name="layer"/>'s <paramref name="part"/> tensor in this family.</summary>
    public string Format(int layer, KvPart part)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layer);
        return Template.Replace("{layer}", layer.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal)
            .Replace("{part}", part == KvPart.Key ? "key" : "value", StringComparison.Ordinal);
    }

    public override string ToString() => Template;
}

/// <summary>A parsed KV-cache tensor name.</summary>
public readonly record struct KvName(KvNameFamily Family, int Layer, KvPart Part)
{
    public KvRole Role => Family.Role;
    public KvLayout Layout => Family.Layout;
    public override string ToString() => Family.Format(Layer, Part);
}

/// <summary>
/// The one list of KV-cache names the compiler (<c>lcc inspect</c>, the architecture card, cache detection) and the
/// runtime (the decoder contract) accept. A name belongs to at most one family (a test checks that every family
/// round-trips and that no two families claim the same name). Adding an exporter's convention = adding a row here.
/// </summary>
public static class KvNames
{
    /// <summary>Hugging Face optimum / transformers.js / onnxruntime-genai: the default the model builders write.</summary>
    public static readonly KvNameFamily PastKeyValues = new("past_key_values.{layer}.{part}", KvRole.Past, KvLayout.Concat, "optimum, onnxruntime-genai");
    public static readonly KvNameFamily Present = new("present.{layer}.{part}", KvRole.Present, KvLayout.Concat, "optimum, onnxruntime-genai");
    /// <summary>Static cache (ONNX opset 24 Attention + TensorScatter): key_cache.N in, updated_key_cache.N out.</summary>
    public static readonly KvNameFamily StaticCache = new("{part}_cache.{layer}", KvRole.Past, KvLayout.Static, "onnx opset-24 static cache");
    public static readonly KvNameFamily StaticUpdated = new("updated_{part}_cache.{layer}", KvRole.Present, KvLayout.Static, "onnx opset-24 static cache");
    /// <summary>Packed cache (com.microsoft.Attention): past_N [2, B, H, P, D] in, present_N out; one name per layer.</summary>
    public static readonly KvNameFamily PackedPast = new("past_{layer}", KvRole.Past, KvLayout.Packed, "onnxruntime transformers (gpt2 past_N, packed)");
    public static readonly KvNameFamily PackedPresent = new("present_{layer}", KvRole.Present, KvLayout.Packed, "onnxruntime transformers (gpt2 present_N, packed)");

    /// <summary>Every family, past then present, most common first.</summary>
    public static IReadOnlyList<KvNameFamily> Families { get; } =
    [
        PastKeyValues,
        new("past_key_values_{layer}_{part}", KvRole.Past, KvLayout.Concat, "older optimum (underscores)"),
        new("past.{layer}.{part}", KvRole.Past, KvLayout.Concat, "onnxruntime transformers (gpt2 tools)"),
        new("past_{part}_{layer}", KvRole.Past, KvLayout.Concat, "torch.onnx.export by hand"),
        new("past_{part}.{layer}", KvRole.Past, KvLayout.Concat, "torch.onnx.export by hand"),
        new("past_{part}s.{layer}", KvRole.Past, KvLayout.Concat, "torch.onnx.export by hand (plural)"),
        StaticCache,
        PackedPast,
        Present,
        new("present_key_values.{layer}.{part}", KvRole.Present, KvLayout.Concat, "optimum (mirrors past_key_values)"),
        new("present_{layer}_{part}", KvRole.Present, KvLayout.Concat, "older optimum (underscores)"),
        new("present_{part}_{layer}", KvRole.Present, KvLayout.Concat, "torch.onnx.export by hand"),
        new("present_{part}.{layer}", KvRole.Present, KvLayout.Concat, "torch.onnx.export by hand"),
        new("present_{part}s.{layer}", KvRole.Present, KvLayout.Concat, "torch.onnx.export by hand (plural)"),
        StaticUpdated,
        PackedPresent,
    ];

    /// <summary>Largest layer index a KV name may carry (no model has 65536 layers; a larger index in a hostile name would
    /// size per-layer tables by it). Such a name is not a KV name: the runtime reports it as an input it cannot map.</summary>
    public const int MaxLayer = (1 << 16) - 1;

    /// <summary>The family, layer and part of a KV-cache tensor name; null when no family claims it (or its layer index
    /// exceeds <see cref="MaxLayer"/>).</summary>
    public static KvName? Parse(string name)
    {
        foreach (var f in Families)
        {
            var m = f.Regex.Match(name);
            if (m.Success && int.TryParse(m.Groups["layer"].ValueSpan, NumberStyles.None, CultureInfo.InvariantCulture, out int layer) && layer <= MaxLayer)
                return new KvName(f, layer, !m.Groups["part"].Success || m.Groups["part"].ValueSpan.SequenceEqual("key") ? KvPart.Key : KvPart.Value);
        }
        return null;
    }

    /// <summary>Like <see cref="Parse"/>, restricted to one role (past for graph inputs, present for outputs).</summary>
    public static KvName? Parse(string name, KvRole role) => Parse(name) is { } n && n.Role == role ? n : null;

    /// <summary>How the names are written, for error messages: "past_key_values.N.key/value, past.N.key/value, ...".</summary>
    public static string Describe(KvRole role) => string.Join(", ",
        Families.Where(f => f.Role == role).Select(f => f.Format(0, KvPart.Key).Replace("0", "N", StringComparison.Ordinal)));
}

/// <summary>The non-cache graph inputs and outputs of a decoder (names the runtime binds by).</summary>
public static class IoNames
{
    public const string InputIds = "input_ids";
    public const string AttentionMask = "attention_mask";
    public const string PositionIds = "position_ids";
    /// <summary>Static cache: where the new tokens are written ([B] int64).</summary>
    public const string WriteIndices = "write_indices";
    /// <summary>Static cache: valid (non-padding) cache length per batch row.</summary>
    public const string NonPadKvSeqLen = "nonpad_kv_seqlen";
    public const string Logits = "logits";
}
