%% Port round-trip benchmark, measured from the BEAM (bench/port.ts runs it).
%% Prints `result <hex of term_to_binary({Name, P50us, P99us, ReqPerSec})>`.
-module(port_bench).
-export([main/1]).

main([Exe | Args]) ->
    Seq = list_to_integer(os:getenv("BENCH_SEQ", "5000")),
    Pipe = list_to_integer(os:getenv("BENCH_PIPE", "50000")),
    Window = list_to_integer(os:getenv("BENCH_WINDOW", "256")),
    P = open_port({spawn_executable, Exe}, [binary, {packet, 4}, exit_status, nouse_stdio, {args, Args}]),
    %% the sidecar greets first; the C baseline does not
    receive {P, {data, _}} -> ok after 300 -> ok end,
    Payload = #{prompt => <<"Summarise the design document in five bullet points.">>, n => 1, score => 0.5},
    [rt(P, I, Payload) || I <- lists:seq(1, 500)], % warm-up
    Lat = lists:sort([begin T0 = erlang:monotonic_time(nanosecond), rt(P, I, Payload), erlang:monotonic_time(nanosecond) - T0 end
                      || I <- lists:seq(1, Seq)]),
    P50 = lists:nth(max(1, Seq div 2), Lat) / 1000,
    P99 = lists:nth(max(1, (Seq * 99) div 100), Lat) / 1000,
    T1 = erlang:monotonic_time(nanosecond),
    pipeline(P, Payload, 1, Pipe, Window, 0),
    Rate = Pipe / ((erlang:monotonic_time(nanosecond) - T1) / 1.0e9),
    port_close(P),
    io:format("result ~s~n", [binary:encode_hex(term_to_binary({P50, P99, Rate}))]),
    halt(0).

rt(P, I, Payload) ->
    port_command(P, term_to_binary({req, I, echo, Payload})),
    receive {P, {data, _}} -> ok end.

%% keep Window requests in flight until N are answered
pipeline(_P, _Payload, Next, N, _W, 0) when Next > N -> ok;
pipeline(P, Payload, Next, N, W, InFlight) when InFlight < W, Next =< N ->
    port_command(P, term_to_binary({req, Next, echo, Payload})),
    pipeline(P, Payload, Next + 1, N, W, InFlight + 1);
pipeline(P, Payload, Next, N, W, InFlight) ->
    receive {P, {data, _}} -> pipeline(P, Payload, Next, N, W, InFlight - 1) end.
