defmodule PromptEngine.Atoms do
  @moduledoc false
  # Replies are decoded with `:erlang.binary_to_term(bin, [:safe])`, which refuses
  # atoms the VM does not know yet. Every atom the sidecar may send is listed here;
  # `PromptEngine.Connection` calls `known/0` at start so this module (and with it
  # these atoms) is loaded before the first frame arrives.

  @frame [:ready, :reply, :event, :protocol_error, :template_updated, :model_trained, :ok, :error]

  @reasons [
    :bad_request, :unknown_op, :not_found, :cancelled, :timeout, :unavailable, :overloaded,
    :conflict, :llm_error, :internal, :shutting_down, :insufficient_data
  ]

  @fields [
    # handshake, health, stats
    :protocol, :version, :os_pid, :ops, :max_frame_bytes, :status, :node_version, :uptime_ms,
    :in_flight, :services, :memory, :rss, :heap_used, :external, :load, :calls, :errors, :mean_ms,
    :port, :frames_in, :frames_out, :protocol_errors, :cancels, :pending_input_bytes,
    :pending_output_bytes, :output_paused, :message,
    # cache
    :found, :value, :total_entries, :hits, :misses, :hit_rate, :evictions, :invalidations, :cache,
    # prompts and optimization
    :prompt, :confidence, :template_used, :optimization_score, :optimized_prompt,
    :improvement_summary, :candidates, :cached, :model_version, :score, :round, :prompt_id,
    :evolution_id, :metric_calls, :text, :model, :usage, :prompt_tokens, :completion_tokens,
    :total_tokens, :test_id, :variant, :posteriors, :successes, :failures, :mean, :draw,
    # templates
    :template, :templates, :template_name, :template_content, :template_type, :language, :id,
    :package_id, :created_at, :stored, :variables, :missing, :name, :source, :dropped, :lookups,
    :memory_hits, :central_hits, :shipped_hits, :central_fallbacks, :requests, :failures,
    :analytics_sent, :analytics_dropped, :updates, :central_connected,
    # tracking entries and queries
    :execution_time_ms, :success, :confidence_score, :context_signature, :response_length,
    :timestamp, :metadata, :feedback_type, :rating, :comment, :user_id, :context,
    :original_prompt_id, :evolved_prompt_id, :evolution_type, :performance_improvement,
    :evolution_timestamp, :evolution_metadata, :variant_a_prompt_id, :variant_b_prompt_id,
    :winner, :confidence_level, :sample_size, :test_duration, :test_timestamp, :metrics,
    :signature_hash, :project_tech_stack, :project_type, :complexity_level, :rows, :count,
    :success_rate, :mean_confidence, :p50_ms, :p95_ms, :kind, :journal_depth, :overlap, :prompts,
    :backend, :db_up, :batches, :mean_batch, :journaled, :replayed, :path,
    # learning
    :samples, :auc, :log_loss, :accuracy, :duration_ms, :promoted, :scores, :p, :ece,
    :spearman, :regret, :feature_spec_hash, :serving_metrics, :serving_version, :epochs, :examples,
    # closed loop
    :experiment, :experiments, :generation, :origin, :exploring, :leader_id, :variants, :status,
    :pinned, :outcomes, :proposals_made, :leader, :base, :improvement, :active, :state,
    :posterior_mean, :p_best, :predicted, :running, :stopped, :retired, :banned, :llm, :offline,
    :model_promoted, :previous_version, :promoted_by,
    # health checks
    :reasons, :checks, :database, :nats, :detail,
    # describe
    :summary, :args, :open_args, :reply, :required, :required_when, :default, :alias_of, :doc,
    :keys, :type, :common_errors, :when, :reason, :examples
  ]

  @doc false
  def known, do: @frame ++ @reasons ++ @fields
end
