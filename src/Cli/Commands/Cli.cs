using System.Text.Json;
using LongCtx.Compiler;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;

namespace LongCtx.Cli.Commands;

/// <summary>Shared CLI plumbing: one-line errors, exit codes, JSON output.</summary>
internal static class Cli
{
    public const int Ok = 0;
    public const int Failure = 1;

    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
    };

    /// <summary>Runs an action; known user-facing failures print one line "lcc: error: ..." and exit 1.</summary>
    public static int Guard(Func<int> action)
    {
        try { return action(); }
        catch (Exception e) when (e is ModelFormatException or LongCtx.Contract.ManifestException or CompileException or IrException or IOException or UnauthorizedAccessException or ArgumentException or InvalidOperationException or NotSupportedException)
        {
            Console.Error.WriteLine("lcc: error: " + OneLine(e.Message));
            return Failure;
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("lcc: cancelled");
            return 130;
        }
    }

    public static string OneLine(string s) => s.ReplaceLineEndings(" ").Trim();

    public static Model Load(FileInfo f) => OnnxReader.Load(f.FullName);
}
