using System.CommandLine;

namespace LongCtx.Cli.Commands;

/// <summary><c>lcc calibrate MODEL --attention ...</c>: the attention calibration (<see cref="CalibrateAttention"/>).</summary>
internal static class CalibrateCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "compiled folder or its model.onnx, with GroupQueryAttention or --attention dense (compile with your --rope/--context first)" };
        var cmd = new Command("calibrate", "Calibrate sparse prefill: per layer the pattern with the least error against dense attention within a density budget -> a file for lcc compile --attention auto --calib") { model };
        CalibrateAttention.AddTo(cmd);
        cmd.SetAction((pr, ct) => Task.FromResult(Cli.Guard(() => pr.GetValue(CalibrateAttention.Attention)
            ? CalibrateAttention.Run(pr, pr.GetValue(model)!, ct)
            : throw new ArgumentException("lcc calibrate needs what to calibrate: lcc calibrate MODEL --attention [--data F.jsonl]"))));
        return cmd;
    }
}
