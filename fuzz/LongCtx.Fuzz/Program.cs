using LongCtx.Fuzz;

// lcc's fuzz harness. Modes:
//   afl                          SharpFuzz's afl++ forkserver loop over stdin/@@ inputs (run by fuzz/run.sh)
//   random SECONDS IN OUT [SEED] in-process random mutation of the corpus IN for SECONDS; findings written to OUT
//   seeds OUT                    writes the builder models (every form, tiny configs) as seed inputs into OUT
//   repro FILE...                runs each file once through the harness and prints the outcome (exit 1 on a finding)
//   minimize IN OUT              shrinks a finding to a small input that fails the same way (for tests/Fuzz/inputs)
return args.FirstOrDefault() switch
{
    "afl" => Modes.Afl(),
    "random" when args.Length >= 4 && int.TryParse(args[1], out int seconds) && seconds > 0 =>
        RandomDriver.Run(TimeSpan.FromSeconds(seconds), args[2], args[3], args.Length > 4 && int.TryParse(args[4], out int seed) ? seed : Environment.TickCount),
    "seeds" when args.Length == 2 => Modes.Seeds(args[1]),
    "repro" when args.Length >= 2 => Modes.Repro(args[1..]),
    "minimize" when args.Length == 3 => Minimizer.Run(args[1], args[2]),
    _ => Modes.Usage(),
};
