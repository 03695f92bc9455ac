//! The REST resources: each one a call of a gRPC service, its request message built
//! from the URL and body, its response message the JSON answer. The router and the
//! OpenAPI document are both made from this table.

/// The HTTP method of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
}

impl Method {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
        }
    }
}

/// What a resource calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    Caller,
    Overview,
    ListTwins,
    GetTwin,
    SendCommand,
    Simulate,
    GetHistory,
    ListAudit,
    Watch,
    GetTwinType,
    ListAlarms,
    AcknowledgeAlarm,
    ShelveAlarm,
    UnshelveAlarm,
    NodeStatus,
    ClusterStatus,
    Recommend,
    ListPackages,
    RegisterPackage,
    GetPackage,
    ListDeployments,
    Deploy,
    Withdraw,
    DecideCanary,
    GetDivergence,
    Annotate,
}

/// Who may call a resource, for its documentation (the services enforce it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Needs {
    Viewer,
    Command,
    Respond,
    Admin,
}

impl Needs {
    pub(crate) fn words(self) -> &'static str {
        match self {
            Needs::Viewer => "any token (viewer and above)",
            Needs::Command => "an operator, planner or admin token",
            Needs::Respond => "an operator or admin token",
            Needs::Admin => "an admin token",
        }
    }
}

/// One REST resource.
#[derive(Debug)]
pub(crate) struct Route {
    pub method: Method,
    /// The path, with `{name}` for each path parameter (the request field's JSON name).
    pub path: &'static str,
    pub call: Call,
    /// The request message; path parameters, the query (GET) or the body (POST) fill it.
    pub request: &'static str,
    /// The response message (for a watch, each event's data is one of its fields).
    pub response: &'static str,
    pub operation: &'static str,
    pub summary: &'static str,
    pub needs: Needs,
}

impl Route {
    /// The names of the path's parameters, in order.
    pub(crate) fn path_params(&self) -> impl Iterator<Item = &'static str> {
        self.path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
    }
}

/// Every resource under `/api/v1`.
pub(crate) const ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: "/api/v1/caller",
        call: Call::Caller,
        request: "doppel.v1.GetCallerRequest",
        response: "doppel.v1.Caller",
        operation: "getCaller",
        summary: "Who the bearer token belongs to, and its role.",
        needs: Needs::Viewer,
    },
    Route {
        method: Method::Get,
        path: "/api/v1/overview",
        call: Call::Overview,
        request: "doppel.v1.GetOverviewRequest",
        response: "doppel.v1.Overview",
        operation: "getOverview",
        summary: "The twins under a prefix grouped by line: counts by run state, alarms, the worst standing alarm's severity and the lowest health.",
        needs: Needs::Viewer,
    },
    Route {
        method: Method::Get,
        path: "/api/v1/twins",
        call: Call::ListTwins,
        request: "doppel.v1.ListTwinsRequest",
        response: "doppel.v1.ListTwinsResponse",
        operation: "listTwins",
        summary: "Lists twins under a path prefix, optionally of one type, a page at a time.",
        needs: Needs::Viewer,
    },
    Route {
        method: Method::Get,
        path: "/api/v1/twins/{assetPath}",
        call: Call::GetTwin,
        request: "doppel.v1.GetTwinRequest",
        response: "doppel.v1.GetTwinResponse",
        operation: "getTwin",
        summary: "Reads one twin: reported, desired and derived values, alarms, trips, health and versions. The asset path is one path segment (`/` encoded as `%2F`).",
        needs: Needs::Viewer,
    },
    Route {
        method: Method::Post,
        path: "/api/v1/twins/{assetPath}/commands",
        call: Call::SendCommand,
        request: "doppel.v1.SendCommandRequest",
        response: "doppel.v1.SendCommandResponse",
        operation: "sendCommand",
        summary: "Sends a command and returns the governors' verdict once it is durable. A governor's denial is a verdict, not an error.",
        needs: Needs::Command,
    },
    Route {
        method: Method::Post,
        path: "/api/v1/twins/{assetPath}/simulate",
        call: Call::Simulate,
        request: "doppel.v1.SimulateRequest",
        response: "doppel.v1.SimulateResponse",
        operation: "simulate",
        summary: "What would happen under a hypothetical command: the verdict the governors would give and the models' projection. Changes and actuates nothing.",
        needs: Needs::Viewer,
    },
    Route {
        method: Method::Get,
        path: "/api/v1/twins/{assetPath}/history",
        call: Call::GetHistory,
        request: "doppel.v1.GetHistoryRequest",
        response: "doppel.v1.GetHistoryResponse",
        operation: "getHistory",
        summary: "A channel's samples in a time range, oldest first.",
        needs: Needs::Viewer,
    },
    Route {
        method: Method::Get,
        path: "/api/v1/audit",
        call: Call::ListAudit,
        request: "doppel.v1.ListAuditRequest",
        response: "doppel.v1.ListAuditResponse",
        operation: "listAudit",
        summary: "Audit records (commands, safety actions, deliveries, alarm responses) under a prefix in a time range, oldest first, a page at a time.",
        needs: Needs::Viewer,
    },
    Route {
        method: Method::Get,
        path: "/api/v1/watch",
        call: Call::Watch,
        request: "doppel.v1.WatchTwinsRequest",
        response: "doppel.v1.WatchTwinsResponse",
        operation: "watchTwins",
        summary: "Server-sent events for the twins under a prefix: a `snapshot` event per twin, one `snapshotComplete`, then a `change` event per change in order. A watcher that fell behind a burst gets `coalesced` events (a twin's whole state now); one that stops reading is ended with an `error` event.",
        needs: Needs::Viewer,
    },
    Route {
        method: Method::Get,
        path: "/api/v1/types/{twinType}",
        call: Call::GetTwinType,
        request: "doppel.v1.GetTwinTypeRequest",
        response: "doppel.v1.TwinTypeInfo",
        operation: "getTwinType",
        summary: "A twin type the node knows: its channels, desired values and commands with their parameters.",
        needs: Needs::Viewer,
    },
    Route {
        method: Method::Get,
        path: "/api/v1/alarms",
        call: Call::ListAlarms,
        request: "doppel.v1.ListAlarmsRequest",
        response: "doppel.v1.ListAlarmsResponse",
        operation: "listAlarms",
        summary: "The alarms of the node's twins under a prefix, with counts and ISA-18.2's rate figures.",
        needs: Needs::Viewer,
    },
    Route {
        method: Method::Post,
        path: "/api/v1/twins/{assetPath}/alarms/{code}/acknowledge",
        call: Call::AcknowledgeAlarm,
        request: "doppel.v1.AcknowledgeAlarmRequest",
        response: "doppel.v1.AlarmResponseResult",
        operation: "acknowledgeAlarm",
        summary: "Acknowledges an alarm, with an optional note; journaled and audited.",
        needs: Needs::Respond,
    },
    Route {
        method: Method::Post,
        path: "/api/v1/twins/{assetPath}/alarms/{code}/shelve",
        call: Call::ShelveAlarm,
        request: "doppel.v1.ShelveAlarmRequest",
        response: "doppel.v1.AlarmResponseResult",
        operation: "shelveAlarm",
        summary: "Shelves an alarm for a while with a reason; it returns by itself, unacknowledged if still active. A latched trip cannot be shelved.",
        needs: Needs::Respond,
    },
    Route {
        method: Method::Post,
        path: "/api/v1/twins/{assetPath}/alarms/{code}/unshelve",
        call: Call::UnshelveAlarm,
        request: "doppel.v1.UnshelveAlarmRequest",
        response: "doppel.v1.AlarmResponseResult",
        operation: "unshelveAlarm",
        summary: "Unshelves a shelved alarm now.",
        needs: Needs::Respond,
    },
    Route {
        method: Method::Get,
        path: "/api/v1/status",
        call: Call::NodeStatus,
        request: "doppel.v1.GetNodeStatusRequest",
        response: "doppel.v1.GetNodeStatusResponse",
        operation: "getNodeStatus",
        summary: "What the node did with its input: per connector and data source, readings received, applied, kept as late, ignored and refused.",
        needs: Needs::Viewer,
    },
    Route {
        method: Method::Get,
        path: "/api/v1/cluster",
        call: Call::ClusterStatus,
        request: "doppel.v1.GetClusterStatusRequest",
        response: "doppel.v1.GetClusterStatusResponse",
        operation: "getClusterStatus",
        summary: "This node's view of its cluster: members, roles, planners and replication links with their lag and outbox depth. 404 on a node outside a cluster.",
        needs: Needs::Viewer,
    },
    Route {
        method: Method::Post,
        path: "/api/v1/twins/{assetPath}/recommend",
        call: Call::Recommend,
        request: "doppel.v1.RecommendRequest",
        response: "doppel.v1.RecommendResponse",
        operation: "recommend",
        summary: "The next best action: candidate commands projected, checked against the twin type's objective and constraints and ranked best first, with bounds and the governors' verdicts. Changes nothing.",
        needs: Needs::Viewer,
    },
    Route {
        method: Method::Post,
        path: "/api/v1/twins/{assetPath}/annotations",
        call: Call::Annotate,
        request: "doppel.v1.AnnotateRequest",
        response: "doppel.v1.AnnotateResponse",
        operation: "annotate",
        summary: "Annotates the outcome of an alarm, a safety action or a recommendation of the twin (confirmed, false alarm, or a comment): an audit record of its own, a label for the models concerned. List them with GET /api/v1/audit?kinds=AUDIT_KIND_ANNOTATION.",
        needs: Needs::Command,
    },
    Route {
        method: Method::Get,
        path: "/api/v1/models/packages",
        call: Call::ListPackages,
        request: "doppel.v1.ListPackagesRequest",
        response: "doppel.v1.ListPackagesResponse",
        operation: "listPackages",
        summary: "The model packages in the node's registry.",
        needs: Needs::Viewer,
    },
    Route {
        method: Method::Post,
        path: "/api/v1/models/packages",
        call: Call::RegisterPackage,
        request: "doppel.v1.RegisterPackageRequest",
        response: "doppel.v1.RegisterPackageResponse",
        operation: "registerPackage",
        summary: "Adds a package file to the registry: signed by a key the node trusts, or unsigned where the node allows it.",
        needs: Needs::Admin,
    },
    Route {
        method: Method::Get,
        path: "/api/v1/models/packages/{kind}/{version}",
        call: Call::GetPackage,
        request: "doppel.v1.GetPackageRequest",
        response: "doppel.v1.GetPackageResponse",
        operation: "getPackage",
        summary: "One package with its parameters, metadata and deployments.",
        needs: Needs::Viewer,
    },
    Route {
        method: Method::Get,
        path: "/api/v1/models/deployments",
        call: Call::ListDeployments,
        request: "doppel.v1.ListDeploymentsRequest",
        response: "doppel.v1.ListDeploymentsResponse",
        operation: "listDeployments",
        summary: "Every deployment, oldest first, with the state of canary rollouts.",
        needs: Needs::Viewer,
    },
    Route {
        method: Method::Post,
        path: "/api/v1/models/deployments",
        call: Call::Deploy,
        request: "doppel.v1.DeployRequest",
        response: "doppel.v1.DeployResponse",
        operation: "deploy",
        summary: "Deploys a registered package as a shadow, canary or to production on the twins a type or path prefix selects, without a restart.",
        needs: Needs::Admin,
    },
    Route {
        method: Method::Post,
        path: "/api/v1/models/deployments/{deployment}/withdraw",
        call: Call::Withdraw,
        request: "doppel.v1.WithdrawRequest",
        response: "doppel.v1.DeployResponse",
        operation: "withdraw",
        summary: "Takes a deployment back: its twins return to what they ran without it.",
        needs: Needs::Admin,
    },
    Route {
        method: Method::Post,
        path: "/api/v1/models/deployments/{deployment}/decide",
        call: Call::DecideCanary,
        request: "doppel.v1.DecideCanaryRequest",
        response: "doppel.v1.DeployResponse",
        operation: "decideCanary",
        summary: "Promotes a canary to production on every twin it selects, or rolls it back.",
        needs: Needs::Admin,
    },
    Route {
        method: Method::Get,
        path: "/api/v1/models/deployments/{deployment}/divergence",
        call: Call::GetDivergence,
        request: "doppel.v1.GetDivergenceRequest",
        response: "doppel.v1.GetDivergenceResponse",
        operation: "getDivergence",
        summary: "How a shadow (or a canary's candidate) differs from production, per twin and summed.",
        needs: Needs::Viewer,
    },
];
