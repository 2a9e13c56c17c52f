using LongCtx.Compiler;
using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.Inspect;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;

namespace LongCtx.Fuzz;

/// <summary>
/// The one entry point every fuzz driver calls (afl++ through SharpFuzz, the in-process random driver, and the regression
/// tests in tests/Fuzz): the bytes of an .onnx file go through what <c>lcc inspect</c> does with a model, plus the
/// Verifier: <see cref="OnnxReader.FromBytes"/>, <see cref="Verifier.Verify"/>, <see cref="ModelInspector.Inspect"/>,
/// <see cref="AttentionDiscovery.Discover"/>, both architecture cards and the cost model, and each report's text.
/// A refusal the CLI prints as one line ("lcc: error: ...") is an expected outcome; any other exception escapes and is a
/// finding (lcc would print a .NET stack trace).
/// </summary>
public static class FuzzTarget
{
    /// <summary>What one input did: "ok", or the refusal class (the CLI's one-line errors) that stopped it.</summary>
    public static string Run(byte[] data) => Run(data, out _);

    /// <summary>As <see cref="Run(byte[])"/>, with the last refusal's message (what lcc would print after "lcc: error: ").</summary>
    public static string Run(byte[] data, out string? message)
    {
        message = null;
        Model m;
        try { m = OnnxReader.FromBytes(data, "fuzz.onnx"); }
        catch (Exception e) when (IsRefusal(e)) { message = e.Message; return "refused by the reader: " + e.GetType().Name; }
        string outcome = "ok";
        try { Verifier.Verify(m); }
        catch (Exception e) when (IsRefusal(e)) { message = e.Message; outcome = "refused by the verifier: " + e.GetType().Name; }
        try
        {
            // lcc inspect does not verify first: it describes whatever the reader accepted
            _ = ModelInspector.Inspect(m).ToText();
            var attention = AttentionDiscovery.Discover(m);
            _ = AttentionReport.ToText(attention);
            var card = attention.Blocks.Count > 0 ? ArchitectureCard.FromBlocks(m, attention.Blocks, out _) : null;
            card ??= ArchitectureCard.FromModelIo(m, out _);
            if (card is not null) _ = card.ToText() + CostModel.Compute(card, new CostOptions()).ToText();
        }
        catch (Exception e) when (IsRefusal(e)) { message = e.Message; return outcome + "; inspect refused: " + e.GetType().Name; }
        return outcome;
    }

    /// <summary>
    /// The exceptions lcc's commands turn into one "lcc: error: ..." line (Cli.Guard): a user-facing refusal, not a
    /// crash. Everything else (NullReference, IndexOutOfRange, Overflow, InvalidCast, OutOfMemory, ...) is a finding.
    /// </summary>
    public static bool IsRefusal(Exception e) => e is ModelFormatException or LongCtx.Contract.ManifestException or CompileException or IrException
        or IOException or UnauthorizedAccessException or ArgumentException or InvalidOperationException or NotSupportedException;
}
