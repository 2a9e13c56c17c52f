using System.CommandLine;
using System.Text.Json;
using LongCtx.Compiler.Inspect;

namespace LongCtx.Cli.Commands;

/// <summary><c>lcc inspect MODEL [--json]</c>: I/O, opsets, op histogram, parameters, external data.</summary>
internal static class InspectCommand
{
    public static Command Create()
    {
        var model = new Argument<FileInfo>("model") { Description = "ONNX model file (external data is read from its folder)" };
        var json = new Option<bool>("--json") { Description = "print JSON instead of a table" };
        var cmd = new Command("inspect", "Describe a model: inputs/outputs, opsets, op histogram, parameters, external data") { model, json };
        cmd.SetAction(pr => Cli.Guard(() =>
        {
            var m = Cli.Load(pr.GetValue(model)!);
            var report = ModelInspector.Inspect(m);
            Console.Out.Write(pr.GetValue(json) ? JsonSerializer.Serialize(report, Cli.Json) + "\n" : report.ToText());
            if (!pr.GetValue(json)) Console.Out.Write(LongCtx.Compiler.Analysis.AttentionReport.ToText(LongCtx.Compiler.Analysis.AttentionDiscovery.Discover(m)));
            return Cli.Ok;
        }));
        return cmd;
    }
}
