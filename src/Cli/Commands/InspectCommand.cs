using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Inspect;

namespace LongCtx.Cli.Commands;

/// <summary><c>lcc inspect MODEL [--json]</c>: I/O, opsets, op histogram, parameters, external data.</summary>
internal static class InspectCommand
{
    public static Command Create()
    {
        var model = new Argument<FileInfo>("model") { Description = "ONNX model file (external data is read from its folder)" };
        var json = new Option<bool>("--json") { Description = "print JSON instead of a table" };
        var memory = new Option<string?>("--memory") { Description = "memory budget for the concurrency estimate, e.g. 24GiB" };
        var bandwidth = new Option<string?>("--bandwidth") { Description = "memory bandwidth for the decode time bound, e.g. 50GB/s" };
        var context = new Option<string>("--context") { Description = "context length for the cost model, e.g. 32k (k = 1024)", DefaultValueFactory = _ => "32k" };
        var cmd = new Command("inspect", "Describe a model: inputs/outputs, opsets, op histogram, parameters, external data, architecture card and long-context cost model") { model, json, memory, bandwidth, context };
        cmd.SetAction(pr => Cli.Guard(() =>
        {
            var costOptions = new CostOptions(Units.ParseTokens(pr.GetValue(context)!, "--context"),
                pr.GetValue(memory) is { } mem ? Units.ParseBytes(mem, "--memory") : null,
                pr.GetValue(bandwidth) is { } bw ? Units.ParseBandwidth(bw, "--bandwidth") : null);
            var m = Cli.Load(pr.GetValue(model)!);
            var report = ModelInspector.Inspect(m);
            var card = ArchitectureCard.FromModelIo(m, out var whyNoCard);
            var cost = card is null ? null : CostModel.Compute(card, costOptions);
            if (pr.GetValue(json))
            {
                var node = JsonSerializer.SerializeToNode(report, Cli.Json)!.AsObject();
                node["architecture"] = card is null ? null : JsonSerializer.SerializeToNode(card, Cli.Json);
                node["cost"] = cost is null ? null : JsonSerializer.SerializeToNode(cost, Cli.Json);
                if (whyNoCard is not null) node["architecture_note"] = whyNoCard;
                Console.Out.Write(node.ToJsonString(Cli.Json) + "\n");
            }
            else Console.Out.Write(report.ToText() + (card is null ? whyNoCard + "\n" : card.ToText() + cost!.ToText()));
            return Cli.Ok;
        }));
        return cmd;
    }
}
