using LongCtx.Compiler.IR;
using LongCtx.Compiler.Passes;
using LongCtx.Compiler.Rewriting;
using LongCtx.Passes.Cleanup;

namespace LongCtx.Passes;

/// <summary>
/// Removes exporter noise with the one-line identities of <see cref="NoiseRules.Table"/> (Identity, no-op Casts, exact
/// Cast round trips), run by the greedy rule driver to a fixed point. Exact: every row replaces a value by one holding
/// the same elements of the same type; graph outputs keep their names.
/// <code>
///   x ─ Identity ─ y ─ f        x ─ f
///   x:f16 ─ Cast(f32) ─ Cast(f16) ─ f   ==>   x:f16 ─ f
/// </code>
/// </summary>
public sealed class CanonicalizeNoise : IPass
{
    public string Name => "canonicalize-noise";
    public string Description => "remove Identity, no-op Casts and exact Cast round trips (one-line rule table)";
    public bool IsExact => true;

    public void Run(Model model, PassContext ctx) => GreedyDriver.Run(model, NoiseRules.Table, ctx, Name);
}
