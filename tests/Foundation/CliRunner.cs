using LongCtx.Cli;

namespace LongCtx.Tests.Foundation;

public sealed record CliResult(int ExitCode, string Stdout, string Stderr);

/// <summary>Runs the lcc command tree in-process with captured output (tests in this assembly run sequentially).</summary>
public static class CliRunner
{
    private static readonly object Gate = new();

    public static CliResult Run(params string[] args)
    {
        lock (Gate)
        {
            var (oldOut, oldErr) = (Console.Out, Console.Error);
            var o = new StringWriter();
            var e = new StringWriter();
            Console.SetOut(o);
            Console.SetError(e);
            try
            {
                int code = Program.Run(args);
                return new CliResult(code, o.ToString(), e.ToString());
            }
            finally
            {
                Console.SetOut(oldOut);
                Console.SetError(oldErr);
            }
        }
    }
}
