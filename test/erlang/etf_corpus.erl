%% A corpus of terms produced by real Erlang for test/codec-erlang.test.ts.
%%   gen:   prints `term <Canonical> <hex of term_to_binary(T, [{minor_version,2}])> <hex of an alternative encoding>`
%%          Canonical = 1 when our encoder must reproduce the minor_version 2 bytes exactly.
%%   check: reads lines `<hexA> <hexB>` from a file and prints `eq <0|1>` per line
%%          (binary_to_term(A) =:= binary_to_term(B)).
%%   expect: reads `<hex> <erlang expression>` lines, prints `eq <0|1>` whether the decoded term =:= the expression.
-module(etf_corpus).
-export([main/1]).

main(["gen"]) ->
    rand:seed(exsss, {17, 42, 2026}),
    Fixed = fixed(),
    Random = [random_term(4) || _ <- lists:seq(1, 260)],
    [emit(T) || T <- Fixed ++ Random],
    %% Encodings Erlang also produces: OTP 25's default (ATOM_EXT 100), old FLOAT_EXT (99), compressed (80).
    [io:format("term 0 ~s ~s~n", [hex(term_to_binary(T)), hex(term_to_binary(T, [{minor_version, 0}]))]) || T <- Fixed],
    [io:format("term 0 ~s ~s~n", [hex(term_to_binary(T)), hex(term_to_binary(T, [compressed]))]) || T <- Fixed],
    halt(0);
main(["check", File]) ->
    {ok, Bin} = file:read_file(File),
    Lines = [L || L <- binary:split(Bin, <<"\n">>, [global]), L =/= <<>>],
    [begin
         [A, B] = binary:split(L, <<" ">>),
         Eq = try binary_to_term(binary:decode_hex(A)) =:= binary_to_term(binary:decode_hex(B)) catch _:_ -> false end,
         io:format("eq ~w~n", [case Eq of true -> 1; false -> 0 end])
     end || L <- Lines],
    halt(0);
main(["expect", File]) ->
    {ok, Bin} = file:read_file(File),
    Lines = [L || L <- binary:split(Bin, <<"\n">>, [global]), L =/= <<>>],
    [begin
         [Hex, Expr] = binary:split(L, <<" ">>),
         {ok, Toks, _} = erl_scan:string(unicode:characters_to_list(Expr) ++ "."),
         {ok, [Form]} = erl_parse:parse_exprs(Toks),
         {value, Want, _} = erl_eval:expr(Form, []),
         Got = binary_to_term(binary:decode_hex(Hex)),
         io:format("eq ~w ~w~n", [case Got =:= Want of true -> 1; false -> 0 end, Got])
     end || L <- Lines],
    halt(0).

emit(T) ->
    io:format("term ~w ~s ~s~n", [canonical(T), hex(term_to_binary(T, [{minor_version, 2}])), hex(term_to_binary(T))]).

hex(B) -> binary:encode_hex(B).

%% Maps above 32 keys are HAMTs, written in hash order: =:= but not byte-equal after a round trip.
canonical(T) when is_map(T) -> case map_size(T) > 32 of true -> 0; false -> all_canonical(maps:to_list(T)) end;
canonical(T) when is_tuple(T) -> all_canonical(tuple_to_list(T));
canonical([H | T]) -> min(canonical(H), canonical(T));
canonical({K, V}) -> min(canonical(K), canonical(V));
canonical(_) -> 1.
all_canonical(L) -> lists:min([1 | [canonical(X) || X <- L]]).

fixed() ->
    Ref = make_ref(),
    Port = hd(erlang:ports()),
    [
     %% atoms
     true, false, nil, undefined, ok, '', 'hello world', 'Ünïcødé', '日本語', list_to_atom(lists:duplicate(255, $a)),
     list_to_atom([16#1F600]),
     %% integers at every encoding boundary
     0, 1, 255, 256, -1, -128, 2147483647, 2147483648, -2147483648, -2147483649,
     9007199254740991, 9007199254740992, -9007199254740991, -9007199254740993,
     1 bsl 63, (1 bsl 64) - 1, -(1 bsl 64), 1 bsl 200, -(1 bsl 2040), 1 bsl 2048, 1 bsl 4000,
     %% floats
     0.0, -0.0, 1.0, -1.0, 0.5, 3.141592653589793, 1.0e300, -1.0e-300, 5.0e-324, 2.2250738585072014e-308,
     1.7976931348623157e308, 123456789.0, 1.0e15, 1.0e16,
     %% binaries
     <<>>, <<"hello">>, <<"héllo wörld"/utf8>>, <<"日本語テキスト"/utf8>>, <<255, 254, 0>>, <<0>>, <<192, 128>>,
     <<16#F0, 16#9F, 16#98, 16#80>>, list_to_binary(lists:duplicate(70000, $x)),
     %% bit binaries
     <<1:1>>, <<5:3>>, <<1, 2, 3:4>>, <<255, 7:7>>,
     %% lists and charlists
     [], [1], [1, 2, 3], "abc", lists:seq(0, 255), lists:seq(1, 300), [256], [-1, 2], [1.0, 2],
     [a | b], [1, 2 | 3], [[], [[]]], "héllo", [$a | <<"tail">>], lists:duplicate(70000, $y),
     [<<"a">>, b, 1, 2.0, {c}],
     %% tuples
     {}, {a}, {ok, 1}, {error, {reason, <<"message">>}}, list_to_tuple(lists:seq(1, 256)), list_to_tuple(lists:seq(1, 1000)),
     {req, 1, echo, #{a => 1}}, {reply, 123456789012, {ok, #{}}},
     %% maps
     #{}, #{a => 1}, #{<<"a">> => 1}, #{a => 1, <<"a">> => 2}, #{1 => one, 2.0 => two, {t} => three, [l] => four, <<"b">> => five, c => six},
     #{<<"__proto__">> => #{<<"polluted">> => true}, <<"constructor">> => 1},
     #{'__proto__' => 2, <<"__proto__">> => 3},
     maps:from_list([{K, K * 2} || K <- lists:seq(1, 33)]),
     maps:from_list([{list_to_atom("k" ++ integer_to_list(K)), K} || K <- lists:seq(1, 40)]),
     maps:from_list([{integer_to_binary(K), #{nested => K}} || K <- lists:seq(1, 32)]),
     #{prompt => <<"Write a {{language}} parser">>, context => #{<<"language">> => <<"rust">>}, breadth => 10, temperature => 1.4},
     %% opaque: pids, ports, references (local and remote-looking)
     self(), Port, Ref, {self(), Ref, Port}, #{pid => self(), ref => Ref},
     binary_to_term(<<131, 88, 119, 9, "node@host", 0, 0, 0, 42, 0, 0, 0, 7, 0, 0, 0, 3>>),
     binary_to_term(<<131, 90, 0, 3, 119, 9, "node@host", 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3>>),
     binary_to_term(<<131, 89, 119, 9, "node@host", 0, 0, 0, 5, 0, 0, 0, 1>>),
     binary_to_term(<<131, 120, 119, 9, "node@host", 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 1>>)
    ].

random_term(0) -> random_leaf();
random_term(D) ->
    case rand:uniform(10) of
        N when N =< 4 -> random_leaf();
        5 -> [random_term(D - 1) || _ <- lists:seq(1, rand:uniform(5) - 1)];
        6 -> list_to_tuple([random_term(D - 1) || _ <- lists:seq(1, rand:uniform(4) - 1)]);
        7 -> maps:from_list([{random_key(), random_term(D - 1)} || _ <- lists:seq(1, rand:uniform(5) - 1)]);
        8 -> [random_leaf() | random_leaf()];
        9 -> [rand:uniform(256) - 1 || _ <- lists:seq(1, rand:uniform(8))];
        10 -> #{random_key() => random_term(D - 1)}
    end.

random_key() ->
    case rand:uniform(4) of
        1 -> list_to_atom("key" ++ integer_to_list(rand:uniform(50)));
        2 -> <<"k", (integer_to_binary(rand:uniform(50)))/binary>>;
        3 -> rand:uniform(1000);
        4 -> {rand:uniform(3)}
    end.

random_leaf() ->
    case rand:uniform(9) of
        1 -> rand:uniform(256) - 1;
        2 -> rand:uniform(1 bsl 40) - (1 bsl 39);
        3 -> (rand:uniform(1 bsl 62)) * (1 bsl rand:uniform(100));
        4 -> rand:uniform() * 1000 - 500;
        5 -> float(rand:uniform(100));
        6 -> list_to_atom("a" ++ integer_to_list(rand:uniform(100)));
        7 -> unicode:characters_to_binary([rand:uniform(16#2FF) + 31 || _ <- lists:seq(1, rand:uniform(12))]);
        8 -> list_to_binary([rand:uniform(256) - 1 || _ <- lists:seq(1, rand:uniform(10))]);
        9 -> lists:nth(rand:uniform(3), [true, false, nil])
    end.
