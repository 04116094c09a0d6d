%% The closed loop's hot path from the BEAM (bench/loopPort.ts runs it):
%% p50/p99 of `echo` and of `choose_prompt` one at a time with 100 live
%% experiments, then choose_prompt + track_execution pairs pipelined
%% (Window pairs in flight, each track sent when its choice arrives), after
%% BENCH_WARMUP_PAIRS untimed pairs.
%% Around the pairs phase it reads CPU time from /proc (machine busy/idle,
%% the sidecar, this BEAM, every postgres process): CPU µs per pair, by
%% process, is what bounds pairs/s on a machine with this many cores.
%% Prints `result <hex of term_to_binary({EchoP50, EchoP99, ChooseP50, ChooseP99,
%% PairsPerSec, EchoPairsPerSec, {BusyUs, IdleUs, SidecarUs, BeamUs, PostgresUs, Cores},
%% SidecarUsPerEchoPair, {PairP50Us, PairP99Us}})>` (the CPU figures are µs per pair; a
%% pair's time runs from its choice sent to its track answered). Settings:
%% BENCH_SEQ (calls timed one at a time, 5000), BENCH_PAIRS (40000),
%% BENCH_WARMUP_PAIRS (20000), BENCH_WINDOW (256), BENCH_ECHO_PAIRS (BENCH_PAIRS);
%% BENCH_DIAG set: the sidecar's `stats` (the loop's and the store's figures) on
%% stderr at the end.
-module(loop_bench).
-export([main/1]).

main([Exe | Args]) ->
    Seq = list_to_integer(os:getenv("BENCH_SEQ", "5000")),
    Pairs = list_to_integer(os:getenv("BENCH_PAIRS", "40000")),
    WarmUp = list_to_integer(os:getenv("BENCH_WARMUP_PAIRS", "20000")),
    Window = list_to_integer(os:getenv("BENCH_WINDOW", "256")),
    EchoPairs = list_to_integer(os:getenv("BENCH_ECHO_PAIRS", integer_to_list(Pairs))),
    Experiments = 100,
    P = open_port({spawn_executable, Exe}, [binary, {packet, 4}, exit_status, nouse_stdio, {args, Args}]),
    receive {P, {data, _}} -> ok after 20000 -> exit(no_ready) end,
    Base = <<"Classify the support ticket {ticket} as billing, bug or other. Answer with one word.">>,
    Choose = fun(I) -> #{experiment => <<"exp-", (integer_to_binary(I rem Experiments))/binary>>, prompt => Base, context => #{<<"model">> => <<"gpt-4o-mini">>}} end,
    %% the store and the 100 experiments exist before anything is timed
    [call(P, I, choose_prompt, Choose(I), 60000) || I <- lists:seq(1, Experiments)],
    Echo = #{prompt => Base, n => 1},
    [call(P, I, echo, Echo, 5000) || I <- lists:seq(1, 500)],
    {os_pid, SidecarPid} = erlang:port_info(P, os_pid),
    %% Timing starts once the sidecar is quiet: what it loads in the background at start (the
    %% embedding model, a worker's first run) would otherwise land in whichever phase runs then.
    quiet(integer_to_list(SidecarPid), 120),
    {EP50, EP99} = latencies(P, Seq, fun(I) -> call(P, I, echo, Echo, 5000) end),
    {CP50, CP99} = latencies(P, Seq, fun(I) -> call(P, I, choose_prompt, Choose(I), 5000) end),
    %% Untimed pairs first: a sidecar serves for days, and what the JIT compiles in its first seconds
    %% (more code on a longer path) would otherwise weigh on the timed pairs of one side more than the other's.
    pairs(P, Choose, 1, WarmUp, Window, #{}, 0, 3000000, []),
    C0 = cpu(SidecarPid),
    T1 = erlang:monotonic_time(nanosecond),
    Times = pairs(P, Choose, 1, Pairs, Window, #{}, 0, 1000000, []),
    Rate = Pairs / ((erlang:monotonic_time(nanosecond) - T1) / 1.0e9),
    C1 = cpu(SidecarPid),
    Cpu = list_to_tuple([(B - A) * 1.0e6 / 100 / Pairs || {A, B} <- lists:zip(tuple_to_list(C0), tuple_to_list(C1))] ++ [erlang:system_info(logical_processors_available)]),
    %% The same driver with echo + echo pairs: the ceiling of this harness and the Port.
    E0 = cpu(SidecarPid),
    T2 = erlang:monotonic_time(nanosecond),
    echo_pairs(P, Echo, 1, EchoPairs, Window, #{}, 0),
    EchoRate = EchoPairs / ((erlang:monotonic_time(nanosecond) - T2) / 1.0e9),
    E1 = cpu(SidecarPid),
    EchoSidecarUs = (element(3, E1) - element(3, E0)) * 1.0e6 / 100 / EchoPairs,
    %% Sorted outside the timed phases.
    PairTimes = lists:sort(Times),
    PairTime = {percentile(PairTimes, 50) / 1000, percentile(PairTimes, 99) / 1000},
    case os:getenv("BENCH_DIAG") of
        false -> ok;
        _ -> io:format(standard_error, "stats: ~p~n", [call(P, 9999999, stats, #{}, 10000)])
    end,
    port_close(P),
    io:format("result ~s~n", [binary:encode_hex(term_to_binary({EP50, EP99, CP50, CP99, Rate, EchoRate, Cpu, EchoSidecarUs, PairTime}))]),
    halt(0).

%% {Busy, Idle} jiffies of the whole machine (/proc/stat, USER_HZ = 100) and
%% utime+stime jiffies of the sidecar, this BEAM, all postgres processes and
%% the peer sidecar named by BENCH_PEER_PID (0 without one).
cpu(SidecarPid) ->
    {ok, Stat} = file:read_file("/proc/stat"),
    [<<"cpu ", Line/binary>> | _] = binary:split(Stat, <<"\n">>),
    [User, Nice, Sys, Idle, IoWait, Irq, SoftIrq, Steal | _] = [binary_to_integer(X) || X <- binary:split(Line, <<" ">>, [global, trim_all])],
    Postgres = lists:sum([proc_ticks(Pid) || Pid <- pids(), proc_comm(Pid) =:= <<"postgres">>]),
    Peer = case os:getenv("BENCH_PEER_PID") of false -> 0; PeerPid -> proc_ticks(PeerPid) end,
    {User + Nice + Sys + Irq + SoftIrq + Steal, Idle + IoWait, proc_ticks(integer_to_list(SidecarPid)), proc_ticks(os:getpid()), Postgres, Peer}.

%% Wait (at most Tries half-seconds) until the sidecar uses at most 10% of a core over half a second.
quiet(_Pid, 0) -> ok;
quiet(Pid, Tries) ->
    A = proc_ticks(Pid),
    timer:sleep(500),
    case proc_ticks(Pid) - A =< 5 of
        true -> ok;
        false -> quiet(Pid, Tries - 1)
    end.

pids() -> [F || F <- element(2, file:list_dir("/proc")), lists:all(fun(C) -> C >= $0 andalso C =< $9 end, F)].

proc_comm(Pid) ->
    case file:read_file("/proc/" ++ Pid ++ "/comm") of
        {ok, C} -> string:trim(C);
        _ -> none
    end.

%% utime + stime (fields 14 and 15) of /proc/PID/stat; 0 when the process is gone.
proc_ticks(Pid) ->
    case file:read_file("/proc/" ++ Pid ++ "/stat") of
        {ok, S} ->
            [_, Rest] = binary:split(S, <<") ">>),
            Fields = binary:split(Rest, <<" ">>, [global]),
            binary_to_integer(lists:nth(12, Fields)) + binary_to_integer(lists:nth(13, Fields));
        _ -> 0
    end.

call(P, Id, Op, Args, Timeout) ->
    port_command(P, term_to_binary({req, Id, Op, Args})),
    receive
        {P, {data, D}} ->
            case binary_to_term(D) of
                {reply, Id, {ok, R}} -> R;
                Other -> exit({unexpected, Other})
            end
    after Timeout -> exit({timeout, Op})
    end.

latencies(_P, Seq, F) ->
    Lat = lists:sort([begin T0 = erlang:monotonic_time(nanosecond), F(I), erlang:monotonic_time(nanosecond) - T0 end || I <- lists:seq(1, Seq)]),
    {percentile(Lat, 50) / 1000, percentile(Lat, 99) / 1000}.

%% The Pct-th percentile of a sorted list of nanoseconds.
percentile(Sorted, Pct) -> lists:nth(max(1, (length(Sorted) * Pct) div 100), Sorted).

echo_pairs(_P, _E, Next, N, _W, Pending, Done) when Done >= N, map_size(Pending) =:= 0, Next > N -> ok;
echo_pairs(P, E, Next, N, W, Pending, Done) when map_size(Pending) < W, Next =< N ->
    Id = 5000000 + 2 * Next,
    port_command(P, term_to_binary({req, Id, echo, E})),
    echo_pairs(P, E, Next + 1, N, W, Pending#{Id => first}, Done);
echo_pairs(P, E, Next, N, W, Pending, Done) ->
    receive
        {P, {data, D}} ->
            case binary_to_term(D) of
                {reply, Id, {ok, _}} when map_get(Id, Pending) =:= first ->
                    port_command(P, term_to_binary({req, Id + 1, echo, E})),
                    echo_pairs(P, E, Next, N, W, maps:put(Id + 1, second, maps:remove(Id, Pending)), Done);
                {reply, Id, {ok, _}} when is_map_key(Id, Pending) ->
                    echo_pairs(P, E, Next, N, W, maps:remove(Id, Pending), Done + 1)
            end
    after 30000 -> exit(pairs_timeout)
    end.

%% Ids: From + 2N for the choice of pair N, From + 2N+1 for its track. Done counts finished pairs;
%% Pending holds when each pair's choice was sent; returns each pair's time (ns), choice sent to track answered.
pairs(_P, _C, Next, N, _W, Pending, Done, _From, Times) when Done >= N, map_size(Pending) =:= 0, Next > N -> Times;
pairs(P, C, Next, N, W, Pending, Done, From, Times) when map_size(Pending) < W, Next =< N ->
    Id = From + 2 * Next,
    port_command(P, term_to_binary({req, Id, choose_prompt, C(Next)})),
    pairs(P, C, Next + 1, N, W, Pending#{Id => erlang:monotonic_time(nanosecond)}, Done, From, Times);
pairs(P, C, Next, N, W, Pending, Done, From, Times) ->
    receive
        {P, {data, D}} ->
            case binary_to_term(D) of
                {reply, Id, {ok, #{prompt_id := Pid, metadata := Meta}}} when is_map_key(Id, Pending) ->
                    Track = #{prompt_id => Pid, success => (Id rem 3) =/= 0, execution_time_ms => 10, metadata => Meta},
                    port_command(P, term_to_binary({req, Id + 1, track_execution, Track})),
                    {Sent, Rest} = maps:take(Id, Pending),
                    pairs(P, C, Next, N, W, Rest#{Id + 1 => Sent}, Done, From, Times);
                {reply, Id, {ok, _}} when is_map_key(Id, Pending) ->
                    {Sent, Rest} = maps:take(Id, Pending),
                    pairs(P, C, Next, N, W, Rest, Done + 1, From, [erlang:monotonic_time(nanosecond) - Sent | Times]);
                Other ->
                    exit({unexpected, Other})
            end
    after 30000 -> exit(pairs_timeout)
    end.
