using System.Text.Json;

namespace LongCtx.Contract;

/// <summary>Reads a typed entry a pass recorded under "runtime" in longctx.json (kept in <see cref="RuntimeSection.Other"/>).</summary>
internal static class RuntimeEntry
{
    /// <summary>
    /// runtime.<paramref name="key"/> as <typeparamref name="T"/>, or null when absent; an unreadable entry, or one
    /// <paramref name="valid"/> rejects, is a one-line error naming the model and the compile option that writes it.
    /// </summary>
    public static T? Read<T>(RuntimeSection runtime, string key, string model, string option, Func<T, bool> valid, string fields) where T : class
    {
        if (runtime.Other?.GetValueOrDefault(key) is not { ValueKind: JsonValueKind.Object } e) return null;
        T? p;
        try { p = e.Deserialize<T>(LongCtxManifest.JsonOptions); }
        catch (JsonException x) { throw new ManifestException($"{model}: longctx.json runtime.{key} cannot be read ({x.Message.Split('\n')[0]}); recompile with lcc compile {option}", x); }
        return p is not null && valid(p) ? p
            : throw new ManifestException($"{model}: longctx.json runtime.{key} is incomplete ({fields}); recompile with lcc compile {option}");
    }
}
