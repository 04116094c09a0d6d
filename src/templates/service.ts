/**
 * Registers the `templates` service: the registry over the shipped
 * templates, with central_cloud behind it when NATS is configured. An update
 * broadcast replaces the registry's copy, drops every cached prompt built
 * from that template (or a partial it includes), and tells the Port owner
 * with an `{:event, :template_updated, ...}` frame.
 */
import '../cache/service.js';
import '../transports/natsLink.js';
import { record } from '../codec/terms.js';
import { defineService } from '../engine.js';
import { CentralCloudClient } from './centralCloud.js';
import { TemplateRegistry } from './registry.js';

declare module '../engine.js' {
  interface Services {
    templates: TemplateRegistry;
  }
}

defineService('templates', {
  create: async (engine) => {
    const link = await engine.service('nats');
    const central = link === undefined ? undefined : new CentralCloudClient(link, { timeoutMs: Number(process.env.CENTRAL_CLOUD_TIMEOUT_MS ?? 500), maxQueue: 1_000, flushMs: 250 });
    const registry = new TemplateRegistry(engine.config.templatesDir, central);
    const cache = await engine.service('cache');
    central?.onUpdate((t) => {
      registry.put(t);
      const dropped = cache.invalidateTag(`template:${t.template_name}`);
      engine.log.info({ template: t.template_name, dropped }, 'template updated by central_cloud');
      engine.emit('template_updated', record({ template_name: t.template_name, template_type: t.template_type, language: t.language, dropped }));
    });
    return registry;
  },
  close: (r) => r.central?.close(),
  stats: (r) => record({ ...r.figures, templates: r.list().length, central_connected: r.centralConnected, ...(r.central ? r.central.figures : {}) }),
});
