"""User-facing text, in French and English, in one catalogue.

Code raises and reports *codes* with parameters; the text a person reads is
rendered here, so that the CLI, the REST API and the dashboards say the same
thing in the same words.
"""

from __future__ import annotations

from .settings import LANGUAGES, get_settings

CATALOGUE: dict[str, dict[str, str]] = {
    # --- data checks (errors) -------------------------------------------------
    "empty_data": {
        "en": "The data set is empty: it has no rows or no columns.",
        "fr": "Le jeu de données est vide : il n'a aucune ligne ou aucune colonne.",
    },
    "target_missing": {
        "en": "Target column '{target}' is not in the data. Columns: {columns}.",
        "fr": "La colonne cible « {target} » n'existe pas dans les données. Colonnes : {columns}.",
    },
    "target_all_missing": {
        "en": "Target column '{target}' has no values: every cell is empty.",
        "fr": "La colonne cible « {target} » n'a aucune valeur : toutes les cellules sont vides.",
    },
    "target_constant": {
        "en": "Target column '{target}' has a single value ({value}): there is nothing to predict.",
        "fr": "La colonne cible « {target} » n'a qu'une seule valeur ({value}) : il n'y a rien à prédire.",
    },
    "class_too_small": {
        "en": "Class {label!r} of '{target}' has only {count} row(s); each class needs at least {minimum}. Remove or merge the rare classes.",
        "fr": "La classe {label!r} de « {target} » n'a que {count} ligne(s) ; chaque classe en demande au moins {minimum}. Supprimez ou regroupez les classes rares.",
    },
    "duplicate_columns": {
        "en": "Several columns share a name: {columns}. Give each column its own name.",
        "fr": "Plusieurs colonnes portent le même nom : {columns}. Donnez à chaque colonne un nom qui lui soit propre.",
    },
    "target_duplicated": {
        "en": "Column '{column}' is a copy of the target '{target}': remove it, the model would only learn to copy it.",
        "fr": "La colonne « {column} » est une copie de la cible « {target} » : retirez-la, le modèle ne ferait que la recopier.",
    },
    "no_features": {
        "en": "No usable feature column is left besides the target '{target}'.",
        "fr": "Il ne reste aucune colonne utilisable en dehors de la cible « {target} ».",
    },
    "too_few_rows": {
        "en": "Only {count} row(s) with a target value; at least {minimum} are needed to train and validate a model.",
        "fr": "Seulement {count} ligne(s) avec une valeur cible ; il en faut au moins {minimum} pour entraîner et valider un modèle.",
    },
    "target_not_numeric": {
        "en": "Regression needs a numeric target, but '{target}' holds text such as {example!r}.",
        "fr": "Une régression demande une cible numérique, mais « {target} » contient du texte comme {example!r}.",
    },
    "y_length_mismatch": {
        "en": "X has {n_x} rows but y has {n_y}: they must have the same length.",
        "fr": "X a {n_x} lignes mais y en a {n_y} : les deux doivent avoir la même longueur.",
    },
    "target_argument": {
        "en": "Give either y or target=, not both and not neither.",
        "fr": "Donnez soit y, soit target=, mais pas les deux et pas aucun.",
    },
    # --- parameters -----------------------------------------------------------
    "bad_task": {
        "en": "Unknown task '{value}'. Choose one of: {choices}.",
        "fr": "Tâche inconnue « {value} ». Choisissez parmi : {choices}.",
    },
    "bad_metric": {
        "en": "Metric '{value}' does not apply to a {task} task. Choose one of: {choices}.",
        "fr": "La métrique « {value} » ne s'applique pas à une tâche {task}. Choisissez parmi : {choices}.",
    },
    "bad_budget": {
        "en": "The time budget must be a number of seconds between {low} and {high}; got {value!r}.",
        "fr": "Le budget de temps doit être un nombre de secondes entre {low} et {high} ; reçu {value!r}.",
    },
    "bad_max_trials": {
        "en": "max_trials must be a whole number of at least 1; got {value!r}.",
        "fr": "max_trials doit être un nombre entier d'au moins 1 ; reçu {value!r}.",
    },
    "bad_device": {
        "en": "Unknown device '{value}'. Choose one of: auto, cpu, cuda.",
        "fr": "Matériel inconnu « {value} ». Choisissez parmi : auto, cpu, cuda.",
    },
    "cuda_unavailable": {
        "en": "device='cuda' was asked for, but no CUDA GPU is usable here ({reason}). Use device='auto' or 'cpu'.",
        "fr": "device='cuda' est demandé, mais aucun GPU CUDA n'est utilisable ici ({reason}). Utilisez device='auto' ou 'cpu'.",
    },
    "task_mismatch": {
        "en": "task='{task}' does not fit target '{target}' with {n_classes} distinct values.",
        "fr": "task='{task}' ne correspond pas à la cible « {target} » qui a {n_classes} valeurs distinctes.",
    },
    "bad_refit": {
        "en": "refit must be 'auto', True or False, not {value!r}.",
        "fr": "refit doit valoir 'auto', True ou False, pas {value!r}.",
    },
    # --- prediction -----------------------------------------------------------
    "not_fitted": {
        "en": "This model is not trained yet: call fit first.",
        "fr": "Ce modèle n'est pas encore entraîné : appelez d'abord fit.",
    },
    "missing_columns": {
        "en": "The data lacks column(s) the model was trained on: {columns}.",
        "fr": "Il manque aux données des colonnes utilisées à l'entraînement : {columns}.",
    },
    "no_proba": {
        "en": "Probabilities exist only for classification; this model does {task}.",
        "fr": "Les probabilités n'existent que pour la classification ; ce modèle fait de la {task}.",
    },
    # --- model files ----------------------------------------------------------
    "model_file_invalid": {
        "en": "'{path}' is not an AutoML model file ({reason}).",
        "fr": "« {path} » n'est pas un fichier de modèle AutoML ({reason}).",
    },
    "model_file_versions": {
        "en": "'{path}' was saved with {library} {saved}, but {current} is installed here. Install {library}=={saved} to load it, or retrain the model.",
        "fr": "« {path} » a été enregistré avec {library} {saved}, mais {current} est installé ici. Installez {library}=={saved} pour le charger, ou réentraînez le modèle.",
    },
    "model_file_format": {
        "en": "'{path}' uses model file format {saved}; this version reads format {current}.",
        "fr": "« {path} » utilise le format de modèle {saved} ; cette version lit le format {current}.",
    },
    # --- guardrails (warnings returned as data) -------------------------------
    "guard_missing_values": {
        "en": "Column '{column}' has {percent:.0f}% missing values; they are imputed.",
        "fr": "La colonne « {column} » a {percent:.0f} % de valeurs manquantes ; elles sont imputées.",
    },
    "guard_target_missing_rows": {
        "en": "{count} row(s) have no usable target value (empty or infinite) and were left out of training.",
        "fr": "{count} ligne(s) n'ont pas de valeur cible utilisable (vide ou infinie) et ont été écartées de l'entraînement.",
    },
    "guard_target_as_text": {
        "en": "The target mixes numbers and text (for example {example}); all its values are read as text labels.",
        "fr": "La cible mêle nombres et texte (par exemple {example}) ; toutes ses valeurs sont lues comme des libellés textuels.",
    },
    "guard_class_imbalance": {
        "en": "Classes are imbalanced: '{label}' is only {percent:.1f}% of the rows. Prefer ROC AUC, balanced accuracy or F1 over accuracy.",
        "fr": "Les classes sont déséquilibrées : « {label} » ne représente que {percent:.1f} % des lignes. Préférez ROC AUC, l'exactitude équilibrée ou F1 à l'exactitude.",
    },
    "guard_high_cardinality": {
        "en": "Column '{column}' has {count} distinct values; it is target-encoded.",
        "fr": "La colonne « {column} » a {count} valeurs distinctes ; elle est encodée par la cible.",
    },
    "guard_id_like": {
        "en": "Column '{column}' looks like an identifier (one distinct value per row); it is ignored.",
        "fr": "La colonne « {column} » ressemble à un identifiant (une valeur distincte par ligne) ; elle est ignorée.",
    },
    "guard_constant_column": {
        "en": "Column '{column}' has a single value; it is ignored.",
        "fr": "La colonne « {column} » n'a qu'une seule valeur ; elle est ignorée.",
    },
    "guard_leakage": {
        "en": "Column '{column}' alone predicts the target almost perfectly (score {score:.3f}): check that it is known before the target is.",
        "fr": "La colonne « {column} » prédit presque parfaitement la cible à elle seule (score {score:.3f}) : vérifiez qu'elle est connue avant la cible.",
    },
    "guard_subsampled": {
        "en": "The data has {rows} rows; the search used a sample of {sample} rows to fit in the time budget.",
        "fr": "Les données ont {rows} lignes ; la recherche a utilisé un échantillon de {sample} lignes pour tenir dans le budget de temps.",
    },
    "guard_budget_short": {
        "en": "The time budget ran out after {count} model(s); a longer budget may give a better model.",
        "fr": "Le budget de temps s'est épuisé après {count} modèle(s) ; un budget plus long peut donner un meilleur modèle.",
    },
    # --- settings and secrets ------------------------------------------------
    "setting_not_boolean": {
        "en": "Setting {name}={value} is not a yes/no value: use true or false.",
        "fr": "Le réglage {name}={value} n'est pas une valeur oui/non : utilisez true ou false.",
    },
    "setting_not_integer": {
        "en": "Setting {name}={value} is not a whole number.",
        "fr": "Le réglage {name}={value} n'est pas un nombre entier.",
    },
    "setting_too_small": {
        "en": "Setting {name}={value} is too small: the minimum is {low}.",
        "fr": "Le réglage {name}={value} est trop petit : le minimum est {low}.",
    },
    "setting_not_size": {
        "en": "Setting {name}={value} is not a size: write for example 500MB, 2GB or a number of bytes.",
        "fr": "Le réglage {name}={value} n'est pas une taille : écrivez par exemple 500MB, 2GB ou un nombre d'octets.",
    },
    "setting_bad_choice": {
        "en": "Setting {name}={value} is not one of: {choices}.",
        "fr": "Le réglage {name}={value} ne fait pas partie de : {choices}.",
    },
    "secret_missing": {
        "en": "{name} is not set: production refuses to start without it (see .env.example).",
        "fr": "{name} n'est pas défini : la production refuse de démarrer sans lui (voir .env.example).",
    },
    "secret_example": {
        "en": "{name} still has an example value: set a real secret before starting in production.",
        "fr": "{name} a encore une valeur d'exemple : définissez un vrai secret avant de démarrer en production.",
    },
    "secrets_file_open": {
        "en": "The secrets file {path} can be read by other users: make it private (chmod 600).",
        "fr": "Le fichier de secrets {path} est lisible par d'autres utilisateurs : rendez-le privé (chmod 600).",
    },
    # --- storage (automl/storage.py, automl/signing.py) ---------------------
    "storage_bad_tenant": {
        "en": "'{value}' is not a valid organisation name for stored files: use lowercase letters, digits and '-', starting with a letter or digit, at most 63 characters.",
        "fr": "« {value} » n'est pas un nom d'organisation valide pour les fichiers stockés : utilisez des minuscules, des chiffres et « - », en commençant par une lettre ou un chiffre, 63 caractères au plus.",
    },
    "storage_bad_kind": {
        "en": "'{value}' is not a kind of stored file. Choose one of: {choices}.",
        "fr": "« {value} » n'est pas un type de fichier stocké. Choisissez parmi : {choices}.",
    },
    "storage_bad_id": {
        "en": "'{value}' is not a valid identifier for stored files: use letters, digits, '_' and '-', at most 64 characters.",
        "fr": "« {value} » n'est pas un identifiant valide pour les fichiers stockés : utilisez des lettres, des chiffres, « _ » et « - », 64 caractères au plus.",
    },
    "storage_bad_name": {
        "en": "'{value}' cannot be used as a stored file name: use letters, digits, '.', '_' and '-', starting with a letter or digit, at most 128 characters, without '/' or '..'. Rename the file and try again.",
        "fr": "« {value} » ne peut pas servir de nom de fichier stocké : utilisez des lettres, des chiffres, « . », « _ » et « - », en commençant par une lettre ou un chiffre, 128 caractères au plus, sans « / » ni « .. ». Renommez le fichier et réessayez.",
    },
    "storage_bad_key": {
        "en": "'{value}' is not a storage key: keys have the form organisation/kind/id/name and are built by the platform.",
        "fr": "« {value} » n'est pas une clé de stockage : les clés ont la forme organisation/type/identifiant/nom et sont construites par la plateforme.",
    },
    "storage_bad_prefix": {
        "en": "'{value}' is not a storage prefix: prefixes have the form organisation/, organisation/kind/ or organisation/kind/id/ and are built by the platform.",
        "fr": "« {value} » n'est pas un préfixe de stockage : les préfixes ont la forme organisation/, organisation/type/ ou organisation/type/identifiant/ et sont construits par la plateforme.",
    },
    "storage_outside_root": {
        "en": "'{key}' would lead outside the storage folder: it is refused. An administrator should check the links inside the storage folder.",
        "fr": "« {key} » mènerait hors du dossier de stockage : refusé. Un administrateur doit vérifier les liens présents dans le dossier de stockage.",
    },
    "artifact_missing": {
        "en": "The stored file '{key}' does not exist: it may have been deleted.",
        "fr": "Le fichier stocké « {key} » n'existe pas : il a peut-être été supprimé.",
    },
    "artifact_incomplete": {
        "en": "The transfer of '{key}' stopped after {received} of {expected} bytes, so nothing was stored. Try again.",
        "fr": "Le transfert de « {key} » s'est arrêté après {received} octets sur {expected} : rien n'a été enregistré. Réessayez.",
    },
    "storage_disabled": {
        "en": "File storage is turned off on this deployment ({setting}=none): data sets, models and reports cannot be saved or read. An administrator can turn it on by setting {setting} to local, s3 or gcs.",
        "fr": "Le stockage des fichiers est désactivé sur ce déploiement ({setting}=none) : jeux de données, modèles et rapports ne peuvent être ni enregistrés ni lus. Un administrateur peut l'activer en réglant {setting} sur local, s3 ou gcs.",
    },
    "storage_not_configured": {
        "en": "{setting} is not set, but the {backend} storage needs it: set it, or choose another STORAGE_BACKEND.",
        "fr": "{setting} n'est pas défini, alors que le stockage {backend} en a besoin : définissez-le, ou choisissez un autre STORAGE_BACKEND.",
    },
    "storage_unreachable": {
        "en": "The file storage at {endpoint} cannot be reached ({reason}). Check that it is running and that its address is right.",
        "fr": "Le stockage de fichiers à l'adresse {endpoint} est injoignable ({reason}). Vérifiez qu'il fonctionne et que son adresse est juste.",
    },
    "storage_failed": {
        "en": "The file storage at {endpoint} refused the operation ({reason}). Check its access keys and permissions.",
        "fr": "Le stockage de fichiers à l'adresse {endpoint} a refusé l'opération ({reason}). Vérifiez ses clés d'accès et ses droits.",
    },
    "artifact_unsigned": {
        "en": "This model file has no platform signature: only models trained on this platform can be loaded here.",
        "fr": "Ce fichier de modèle n'a pas de signature de la plateforme : seuls les modèles entraînés sur cette plateforme peuvent être chargés ici.",
    },
    "artifact_tampered": {
        "en": "This model file does not match its signature: it was changed, or was not written by this platform. It is refused; train the model again.",
        "fr": "Ce fichier de modèle ne correspond pas à sa signature : il a été modifié, ou n'a pas été écrit par cette plateforme. Il est refusé ; entraînez à nouveau le modèle.",
    },
    "artifact_signature_version": {
        "en": "This model file is signed with scheme '{version}', which this version of the platform does not know. It is refused; train the model again.",
        "fr": "Ce fichier de modèle est signé avec le schéma « {version} », inconnu de cette version de la plateforme. Il est refusé ; entraînez à nouveau le modèle.",
    },
    # --- metadata and quotas (automl/db/, automl/quotas.py) -----------------
    "not_found": {
        "en": "No {kind} with id '{id}' was found in your team. Check the id, or list your {kind}s to find it.",
        "fr": "Aucun élément « {kind} » avec l'identifiant « {id} » dans votre équipe. Vérifiez l'identifiant, ou affichez la liste pour le retrouver.",
    },
    "tenant_name_invalid": {
        "en": "'{name}' cannot name a team: use 1 to 63 lowercase letters, digits, '-' or '_', starting with a letter or digit.",
        "fr": "« {name} » ne peut pas nommer une équipe : utilisez 1 à 63 lettres minuscules, chiffres, « - » ou « _ », en commençant par une lettre ou un chiffre.",
    },
    "plan_unknown": {
        "en": "There is no plan named '{plan}'. Plans: {choices}.",
        "fr": "Il n'existe pas d'offre nommée « {plan} ». Offres : {choices}.",
    },
    "record_bad_choice": {
        "en": "'{value}' is not a valid {field}. Choose one of: {choices}.",
        "fr": "« {value} » n'est pas une valeur possible pour {field}. Choisissez parmi : {choices}.",
    },
    "usage_amount_invalid": {
        "en": "A usage amount of {kind} must be a finite number of at least 0; got {value!r}.",
        "fr": "Une consommation de {kind} doit être un nombre fini, au moins 0 ; reçu {value!r}.",
    },
    "database_url_unsupported": {
        "en": "DATABASE_URL uses '{scheme}', which is not supported: use sqlite:///path/to/file.sqlite or postgresql://user:password@host/database.",
        "fr": "DATABASE_URL utilise « {scheme} », qui n'est pas pris en charge : utilisez sqlite:///chemin/fichier.sqlite ou postgresql://utilisateur:motdepasse@hôte/base.",
    },
    "quota_jobs_running": {
        "en": "Your team already has {active} job(s) waiting or running, the most the '{plan}' plan allows at once ({limit}). Wait for one to finish, or cancel one, then try again.",
        "fr": "Votre équipe a déjà {active} tâche(s) en attente ou en cours, le maximum simultané de l'offre « {plan} » ({limit}). Attendez qu'une tâche se termine, ou annulez-en une, puis réessayez.",
    },
    "quota_compute_exhausted": {
        "en": "Your team has used {used:.0f} of the {limit} compute minutes included this month in the '{plan}' plan. New jobs can start again on {reset}, or ask your administrator for a larger plan.",
        "fr": "Votre équipe a utilisé {used:.0f} des {limit} minutes de calcul incluses ce mois-ci dans l'offre « {plan} ». Les nouvelles tâches pourront reprendre le {reset}, ou demandez une offre plus grande à votre administrateur.",
    },
    "quota_trial_expired": {
        "en": "The free trial of team '{tenant}' ('{plan}' plan) ended on {expired}. Ask your administrator to move the team to a paid plan.",
        "fr": "L'essai gratuit de l'équipe « {tenant} » (offre « {plan} ») a pris fin le {expired}. Demandez à votre administrateur de passer l'équipe à une offre payante.",
    },
    "quota_tenant_disabled": {
        "en": "Team '{tenant}' is disabled, so it cannot start jobs or add files. Ask your administrator to enable it again.",
        "fr": "L'équipe « {tenant} » est désactivée : elle ne peut ni lancer de tâches ni ajouter de fichiers. Demandez à votre administrateur de la réactiver.",
    },
    "quota_gpu_not_allowed": {
        "en": "The '{plan}' plan does not include GPU jobs. Run the job on CPU, or ask your administrator for a plan with GPU.",
        "fr": "L'offre « {plan} » n'inclut pas les tâches sur GPU. Lancez la tâche sur CPU, ou demandez à votre administrateur une offre avec GPU.",
    },
    "quota_storage_full": {
        "en": "Not enough storage: this needs {needed_gb:.2f} GB, and your team uses {used_gb:.2f} GB of the {limit_gb:.2f} GB of the '{plan}' plan. Delete data sets or models you no longer need, or ask your administrator for a larger plan.",
        "fr": "Stockage insuffisant : il faut {needed_gb:.2f} Go, et votre équipe utilise {used_gb:.2f} Go sur les {limit_gb:.2f} Go de l'offre « {plan} ». Supprimez des jeux de données ou des modèles inutiles, ou demandez une offre plus grande à votre administrateur.",
    },
    "quota_upload_too_large": {
        "en": "The file is {size_mb:.1f} MB; the largest file allowed is {limit_mb:.1f} MB ('{plan}' plan). Send a smaller file, for example a sample of the rows or a compressed Parquet file.",
        "fr": "Le fichier fait {size_mb:.1f} Mo ; la taille maximale autorisée est {limit_mb:.1f} Mo (offre « {plan} »). Envoyez un fichier plus petit, par exemple un échantillon des lignes ou un fichier Parquet compressé.",
    },
    # --- platform service (hub/service/) -------------------------------------
    # the gate (hub/service/auth.py)
    "not_authenticated": {
        "en": "You are not signed in, or your access token is not valid any more. Sign in to the hub again, or create a new token on the hub's Token page.",
        "fr": "Vous n'êtes pas connecté, ou votre jeton d'accès n'est plus valide. Reconnectez-vous au hub, ou créez un nouveau jeton sur la page Token du hub.",
    },
    "hub_unavailable": {
        "en": "The hub cannot confirm who you are right now. Try again in a minute; if it lasts, tell your administrator.",
        "fr": "Le hub ne peut pas confirmer votre identité pour le moment. Réessayez dans une minute ; si cela dure, prévenez votre administrateur.",
    },
    "no_service_access": {
        "en": "Account '{user}' is not allowed to use AutoML Hub. Ask your administrator for access.",
        "fr": "Le compte « {user} » n'a pas accès à AutoML Hub. Demandez l'accès à votre administrateur.",
    },
    "no_tenant": {
        "en": "Account '{user}' does not belong to any team yet. Ask your administrator to add you to your team.",
        "fr": "Le compte « {user} » n'appartient encore à aucune équipe. Demandez à votre administrateur de vous ajouter à votre équipe.",
    },
    "many_tenants": {
        "en": "Account '{user}' belongs to several teams ({tenants}), but must belong to exactly one. Ask your administrator to keep only yours.",
        "fr": "Le compte « {user} » appartient à plusieurs équipes ({tenants}), mais doit appartenir à une seule. Demandez à votre administrateur de ne garder que la vôtre.",
    },
    "missing_scope": {
        "en": "Account '{user}' is not allowed to {permission[en]}. Ask your team's administrator for a role that allows it.",
        "fr": "Le compte « {user} » n'est pas autorisé à {permission[fr]}. Demandez à l'administrateur de votre équipe un rôle qui le permet.",
    },
    "permission_read": {
        "en": "view the team's data sets, models and jobs",
        "fr": "consulter les jeux de données, modèles et tâches de l'équipe",
    },
    "permission_train": {
        "en": "upload data, train models or run predictions",
        "fr": "importer des données, entraîner des modèles ou lancer des prédictions",
    },
    "permission_admin": {
        "en": "manage teams, plans and quotas",
        "fr": "gérer les équipes, les offres et les quotas",
    },
    "cross_site_request": {
        "en": "This request was sent by another web site and was refused. Use the platform's own pages, or send an API token.",
        "fr": "Cette requête a été envoyée par un autre site web et a été refusée. Utilisez les pages de la plateforme, ou envoyez un jeton d'API.",
    },
    "oauth_failed": {
        "en": "Signing in through the hub did not complete. Open the page again to retry.",
        "fr": "La connexion par le hub n'a pas abouti. Rouvrez la page pour réessayer.",
    },
    "file_one_column": {
        "en": "The file {path} has a single column ('{column}'): training needs a target and at least one other column. If the columns are separated by another character, save the file as CSV with commas or semicolons.",
        "fr": "Le fichier {path} n'a qu'une seule colonne (« {column} ») : l'entraînement demande une cible et au moins une autre colonne. Si les colonnes sont séparées par un autre caractère, enregistrez le fichier en CSV avec des virgules ou des points-virgules.",
    },
    "job_no_output": {
        "en": "This job has no output file (status: {status}). Only finished batch predictions have one.",
        "fr": "Cette tâche n'a pas de fichier de sortie (état : {status}). Seules les prédictions par lot terminées en ont un.",
    },
    "model_gone": {
        "en": "The model of this job was deleted before the job started.",
        "fr": "Le modèle de cette tâche a été supprimé avant le début de la tâche.",
    },
    "bad_filename": {
        "en": "The file name '{name}' cannot be used: use letters, digits, spaces, dots, dashes or underscores, without folders.",
        "fr": 'Le nom de fichier « {name} » ne peut pas être utilisé : utilisez des lettres, chiffres, espaces, points, tirets ou soulignés, sans dossier.',
    },
    "upload_too_large": {
        "en": 'The file is larger than the {limit_mb} MB allowed for your plan: upload a smaller file or a sample of it.',
        "fr": 'Le fichier dépasse les {limit_mb} Mo autorisés par votre offre : envoyez un fichier plus petit ou un extrait.',
    },
    "dataset_in_use": {
        "en": 'This data set is used by a job that has not finished ({job}): wait for it or cancel it, then delete the data set.',
        "fr": 'Ce jeu de données est utilisé par une tâche en cours ({job}) : attendez sa fin ou annulez-la, puis supprimez le jeu de données.',
    },
    "dataset_gone": {
        "en": 'The data set of this job was deleted before training started.',
        "fr": "Le jeu de données de cette tâche a été supprimé avant le début de l'entraînement.",
    },
    "job_finished": {
        "en": 'This job has already ended ({status}): there is nothing to cancel.',
        "fr": "Cette tâche est déjà terminée ({status}) : il n'y a rien à annuler.",
    },
    "job_crashed": {
        "en": 'Training stopped on an unexpected error ({reason}). Try again; if it happens again, contact your administrator.',
        "fr": "L'entraînement s'est arrêté sur une erreur inattendue ({reason}). Réessayez ; si cela se reproduit, contactez votre administrateur.",
    },
    "job_interrupted": {
        "en": 'The job was interrupted by a restart of the platform {attempts} time(s) and was not run again. Submit it again.',
        "fr": "La tâche a été interrompue {attempts} fois par un redémarrage de la plateforme et n'a pas été relancée. Soumettez-la à nouveau.",
    },
    "job_lost": {
        "en": "The process running this job stopped answering ({attempts} attempt(s)); the job was not run again. Submit it again; if it happens again, the data may be too large for this machine.",
        "fr": "Le processus qui exécutait cette tâche ne répond plus ({attempts} tentative(s)) ; la tâche n'a pas été relancée. Soumettez-la à nouveau ; si cela se reproduit, les données sont peut-être trop volumineuses pour cette machine.",
    },
    "job_kind_unknown": {
        "en": 'This kind of job ({kind}) is not known to this platform version.',
        "fr": "Ce type de tâche ({kind}) n'est pas connu de cette version de la plateforme.",
    },
    "predict_columns_missing": {
        "en": 'Columns missing from the rows to predict: {columns}. Send every column the model was trained on.',
        "fr": "Colonnes absentes des lignes à prédire : {columns}. Envoyez toutes les colonnes utilisées à l'entraînement.",
    },
    "predict_columns_extra": {
        "en": 'Columns the model does not know: {columns}. Send only the columns the model was trained on.',
        "fr": "Colonnes inconnues du modèle : {columns}. N'envoyez que les colonnes utilisées à l'entraînement.",
    },
    "invalid_json": {
        "en": 'The request body is not valid JSON.',
        "fr": "Le corps de la requête n'est pas du JSON valide.",
    },
    "field_missing": {
        "en": "'{field}' is required.",
        "fr": '« {field} » est obligatoire.',
    },
    "field_unknown": {
        "en": "'{field}' is not a field of this request.",
        "fr": "« {field} » n'est pas un champ de cette requête.",
    },
    "field_too_small": {
        "en": "'{field}' must be at least {ge}.",
        "fr": '« {field} » doit valoir au moins {ge}.',
    },
    "field_too_large": {
        "en": "'{field}' must be at most {le}.",
        "fr": '« {field} » doit valoir au plus {le}.',
    },
    "field_too_short": {
        "en": "'{field}' must have at least {min_length} character(s).",
        "fr": '« {field} » doit avoir au moins {min_length} caractère(s).',
    },
    "field_too_long": {
        "en": "'{field}' must have at most {max_length} characters.",
        "fr": '« {field} » doit avoir au plus {max_length} caractères.',
    },
    "field_too_few": {
        "en": "'{field}' must hold at least {min_length} item(s).",
        "fr": '« {field} » doit contenir au moins {min_length} élément(s).',
    },
    "field_too_many": {
        "en": "'{field}' must hold at most {max_length} items.",
        "fr": '« {field} » doit contenir au plus {max_length} éléments.',
    },
    "field_not_a_choice": {
        "en": "'{field}' must be one of {expected}.",
        "fr": '« {field} » doit valoir {expected}.',
    },
    "field_bad_format": {
        "en": "'{field}' is not in the expected form.",
        "fr": "« {field} » n'a pas la forme attendue.",
    },
    "field_invalid": {
        "en": "'{field}' is invalid: {detail}.",
        "fr": '« {field} » est invalide : {detail}.',
    },
    "route_not_found": {
        "en": 'There is no such address in the API.',
        "fr": "Cette adresse n'existe pas dans l'API.",
    },
    "method_not_allowed": {
        "en": 'This address does not accept this method.',
        "fr": "Cette adresse n'accepte pas cette méthode.",
    },
    "http_error": {
        "en": 'The request was refused (HTTP {http_status}).',
        "fr": 'La requête a été refusée (HTTP {http_status}).',
    },
    # --- rate limits (automl/ratelimit.py) ---
    "rate_limited": {
        "en": "Too many requests: each user may send at most {limit} every {window} seconds. Wait {retry_after} second(s) and try again.",
        "fr": "Trop de requêtes : chaque utilisateur peut en envoyer au plus {limit} toutes les {window} secondes. Attendez {retry_after} seconde(s) puis réessayez.",
    },
    "rate_limit_redis_url": {
        "en": "REDIS_URL is not a Redis address ({reason}): write it as redis://host:6379/0 (rediss:// for TLS), or leave it empty to keep the limits in memory.",
        "fr": "REDIS_URL n'est pas une adresse Redis ({reason}) : écrivez-la sous la forme redis://hôte:6379/0 (rediss:// pour TLS), ou laissez-la vide pour garder les limites en mémoire.",
    },
    # --- reports (automl/reports.py) ---
    "report_title": {
        "en": "Model report",
        "fr": "Rapport du modèle",
    },
    "report_intro": {
        "en": "This report describes the model saved in {file}: how it was chosen, how well it scores on rows it did not learn from, and which columns it relies on.",
        "fr": "Ce rapport décrit le modèle enregistré dans {file} : comment il a été choisi, son score sur des lignes qu'il n'a pas apprises, et les colonnes sur lesquelles il s'appuie.",
    },
    "report_summary": {"en": "Summary", "fr": "Résumé"},
    "report_task": {"en": "Task", "fr": "Tâche"},
    "report_task_binary": {"en": "binary classification", "fr": "classification binaire"},
    "report_task_multiclass": {"en": "multiclass classification", "fr": "classification multiclasse"},
    "report_task_regression": {"en": "regression", "fr": "régression"},
    "report_target": {"en": "Target column", "fr": "Colonne cible"},
    "report_metric": {"en": "Metric", "fr": "Métrique"},
    "report_best_score": {"en": "Best validation score", "fr": "Meilleur score de validation"},
    "report_best_model": {"en": "Best model", "fr": "Meilleur modèle"},
    "report_ensemble": {"en": "Final model (weight of each model)", "fr": "Modèle final (poids de chaque modèle)"},
    "report_trials": {"en": "Models tried", "fr": "Modèles essayés"},
    "report_fit_time": {"en": "Training time", "fr": "Durée d'entraînement"},
    "report_seconds": {"en": "{seconds:.1f} s", "fr": "{seconds:.1f} s"},
    "report_stopped_by": {"en": "Search ended", "fr": "Fin de la recherche"},
    "report_stopped_completed": {
        "en": "every planned model was tried",
        "fr": "tous les modèles prévus ont été essayés",
    },
    "report_stopped_budget": {"en": "the time budget ran out", "fr": "le budget de temps était épuisé"},
    "report_stopped_cancelled": {"en": "stopped at your request", "fr": "arrêtée à votre demande"},
    "report_leaderboard": {"en": "Leaderboard", "fr": "Classement des modèles"},
    "report_leaderboard_intro": {
        "en": "Every model tried, best first. The score is {metric}, measured on rows each model did not learn from (cross-validation); the weight is the model's share in the final model.",
        "fr": "Tous les modèles essayés, du meilleur au moins bon. Le score est {metric}, mesuré sur des lignes que chaque modèle n'a pas apprises (validation croisée) ; le poids est la part du modèle dans le modèle final.",
    },
    "report_col_rank": {"en": "Rank", "fr": "Rang"},
    "report_col_model": {"en": "Model", "fr": "Modèle"},
    "report_col_family": {"en": "Family", "fr": "Famille"},
    "report_col_score": {"en": "Score", "fr": "Score"},
    "report_col_fit_time": {"en": "Training (s)", "fr": "Entraînement (s)"},
    "report_col_predict_time": {"en": "Prediction (s)", "fr": "Prédiction (s)"},
    "report_col_weight": {"en": "Weight", "fr": "Poids"},
    "report_validation": {"en": "Validation scores", "fr": "Scores de validation"},
    "report_validation_intro": {
        "en": "The final model's scores on rows it did not learn from, for several metrics.",
        "fr": "Les scores du modèle final sur des lignes qu'il n'a pas apprises, pour plusieurs métriques.",
    },
    "report_importance": {"en": "What the model relies on", "fr": "Ce sur quoi le modèle s'appuie"},
    "report_importance_intro": {
        "en": "How much the validation score drops when the values of one column are shuffled: the longer the bar, the more the model needs that column.",
        "fr": "De combien le score de validation baisse quand on mélange les valeurs d'une colonne : plus la barre est longue, plus le modèle a besoin de cette colonne.",
    },
    "report_importance_axis": {"en": "Drop in validation score", "fr": "Baisse du score de validation"},
    "report_confusion": {"en": "Confusion matrix", "fr": "Matrice de confusion"},
    "report_confusion_intro": {
        "en": "Rows are the true classes, columns the predicted ones: the diagonal counts the right answers.",
        "fr": "Les lignes sont les vraies classes, les colonnes les classes prédites : la diagonale compte les bonnes réponses.",
    },
    "report_actual": {"en": "Actual", "fr": "Réel"},
    "report_predicted": {"en": "Predicted", "fr": "Prédit"},
    "report_roc": {"en": "ROC curve", "fr": "Courbe ROC"},
    "report_roc_intro": {
        "en": "The further the curve rises above the diagonal, the better the model tells the class apart from the others.",
        "fr": "Plus la courbe s'élève au-dessus de la diagonale, mieux le modèle distingue la classe des autres.",
    },
    "report_fpr": {"en": "False positive rate", "fr": "Taux de faux positifs"},
    "report_tpr": {"en": "True positive rate", "fr": "Taux de vrais positifs"},
    "report_chance": {"en": "chance", "fr": "hasard"},
    "report_residuals": {"en": "Predictions and errors", "fr": "Prédictions et erreurs"},
    "report_residuals_intro": {
        "en": "Left: predicted against actual values; points near the diagonal are good predictions. Right: the error (actual − predicted) against the prediction; a visible pattern means the model is off in the same way for a range of values.",
        "fr": "À gauche : valeurs prédites contre valeurs réelles ; les points proches de la diagonale sont de bonnes prédictions. À droite : l'erreur (réel − prédit) selon la prédiction ; une forme visible signifie que le modèle se trompe dans le même sens sur une plage de valeurs.",
    },
    "report_residual": {"en": "Error (actual − predicted)", "fr": "Erreur (réel − prédit)"},
    "report_guardrails": {"en": "Data checks", "fr": "Contrôles des données"},
    "report_guardrails_intro": {
        "en": "What AutoML noticed in the data, and what it did about it.",
        "fr": "Ce qu'AutoML a remarqué dans les données, et ce qu'il en a fait.",
    },
    "report_no_guardrails": {"en": "Nothing to report.", "fr": "Rien à signaler."},
    "report_severity_warning": {"en": "Warning", "fr": "Attention"},
    "report_severity_info": {"en": "Note", "fr": "Remarque"},
    "train_nb_title": {"en": "Train the model again", "fr": "Réentraîner le modèle"},
    "train_nb_intro": {
        "en": "This notebook trains the model again with the AutoML Python API, on the same data and with the same settings as the run. Run every cell in order (Run ▸ Run All Cells).",
        "fr": "Ce notebook réentraîne le modèle avec l'API Python d'AutoML, sur les mêmes données et avec les mêmes réglages que l'entraînement d'origine. Exécutez toutes les cellules dans l'ordre (Run ▸ Run All Cells).",
    },
    "train_nb_data": {
        "en": "Data: {path}, target column {target}.",
        "fr": "Données : {path}, colonne cible {target}.",
    },
    "train_nb_exact": {
        "en": "The search has no time limit and uses seed {seed}: running this notebook gives the same model.",
        "fr": "La recherche n'a pas de limite de temps et utilise la graine {seed} : exécuter ce notebook redonne le même modèle.",
    },
    "train_nb_budget": {
        "en": "The search is limited to {seconds} seconds (seed {seed}). How many models fit in that time depends on the machine and its load, so the result can differ a little. For exactly the same model on every run, set `time_budget=None` and `max_trials` to a number of models.",
        "fr": "La recherche est limitée à {seconds} secondes (graine {seed}). Le nombre de modèles essayés dans ce temps dépend de la machine et de sa charge : le résultat peut donc varier un peu. Pour obtenir exactement le même modèle à chaque exécution, mettez `time_budget=None` et `max_trials` à un nombre de modèles.",
    },
    "train_nb_read": {"en": "Read the data", "fr": "Lire les données"},
    "train_nb_fit": {"en": "Train", "fr": "Entraîner"},
    "train_nb_save": {"en": "Save the model", "fr": "Enregistrer le modèle"},
    "train_nb_save_intro": {
        "en": "`AutoML.load` reads the file back; `predict` then gives predictions for new rows.",
        "fr": "`AutoML.load` relit le fichier ; `predict` donne ensuite les prédictions pour de nouvelles lignes.",
    },
    "report_model_invalid": {
        "en": "The report cannot be built: {detail}",
        "fr": "Le rapport ne peut pas être produit : {detail}",
    },
    "report_cell_failed": {
        "en": "The report stopped at cell {number} ({step}): {error}",
        "fr": "Le rapport s'est arrêté à la cellule {number} ({step}) : {error}",
    },
    "report_timeout": {
        "en": "The report took more than {seconds} seconds at cell {number} ({step}) and was stopped. Try again later; if it happens again, contact your administrator.",
        "fr": "Le rapport a dépassé {seconds} secondes à la cellule {number} ({step}) et a été arrêté. Réessayez plus tard ; si cela se reproduit, contactez votre administrateur.",
    },
    "report_kernel_failed": {
        "en": "The report could not start Python to run its notebook ({reason}). Contact your administrator: ipykernel must be installed next to AutoML.",
        "fr": "Le rapport n'a pas pu démarrer Python pour exécuter son notebook ({reason}). Contactez votre administrateur : ipykernel doit être installé avec AutoML.",
    },
    "report_unavailable": {
        "en": "Reports need the Python package '{package}', which is not installed here. Contact your administrator.",
        "fr": "Les rapports ont besoin du paquet Python « {package} », qui n'est pas installé ici. Contactez votre administrateur.",
    },
    "report_bad_param": {
        "en": "Setting '{name}' = {value!r} cannot be written into a notebook: use a number, a text, true/false or nothing.",
        "fr": "Le réglage « {name} » = {value!r} ne peut pas être écrit dans un notebook : utilisez un nombre, un texte, vrai/faux ou rien.",
    },
    # --- tracking (automl/tracking.py) ---
    "tracking_not_installed": {
        "en": "The model is trained and saved, but it was not recorded in MLflow: MLflow is not installed on the training machine. Ask your administrator to install the 'tracking' extra of automl-hub.",
        "fr": "Le modèle est entraîné et enregistré, mais il n'a pas été consigné dans MLflow : MLflow n'est pas installé sur la machine d'entraînement. Demandez à votre administrateur d'installer l'option « tracking » d'automl-hub.",
    },
    "tracking_not_configured": {
        "en": "The model is trained and saved, but it was not recorded in MLflow: no MLflow address is configured (MLFLOW_TRACKING_URI).",
        "fr": "Le modèle est entraîné et enregistré, mais il n'a pas été consigné dans MLflow : aucune adresse MLflow n'est configurée (MLFLOW_TRACKING_URI).",
    },
    "tracking_failed": {
        "en": "The model is trained and saved, but it could not be recorded in MLflow at {uri}: {reason}. Check that MLflow is reachable; the model itself can be used as usual.",
        "fr": "Le modèle est entraîné et enregistré, mais il n'a pas pu être consigné dans MLflow à l'adresse {uri} : {reason}. Vérifiez que MLflow est joignable ; le modèle lui-même s'utilise normalement.",
    },
    # --- files and CLI ---
    "file_not_found": {
        "en": "File '{path}' does not exist.",
        "fr": "Le fichier « {path} » n'existe pas.",
    },
    "file_not_a_file": {
        "en": "'{path}' is a folder, not a file.",
        "fr": "« {path} » est un dossier, pas un fichier.",
    },
    "file_unreadable": {
        "en": "'{path}' cannot be read: {reason}.",
        "fr": "Impossible de lire « {path} » : {reason}.",
    },
    "file_too_large": {
        "en": "'{path}' holds {size_mb:.1f} MB of data; the limit is {limit_mb:.1f} MB.",
        "fr": "« {path} » contient {size_mb:.1f} Mo de données ; la limite est de {limit_mb:.1f} Mo.",
    },
    "file_empty": {
        "en": "'{path}' is empty.",
        "fr": "« {path} » est vide.",
    },
    "file_no_rows": {
        "en": "'{path}' has column names but no data rows.",
        "fr": "« {path} » a des noms de colonnes mais aucune ligne de données.",
    },
    "file_format_unsupported": {
        "en": "'{path}' is in a format that cannot be read ({found}). Supported formats: {formats}.",
        "fr": "« {path} » est dans un format illisible ici ({found}). Formats acceptés : {formats}.",
    },
    "file_wrong_content": {
        "en": "'{path}' is named like a {format} file but does not contain one. If it is a CSV file, rename it to .csv.",
        "fr": "« {path} » porte le nom d'un fichier {format} mais n'en contient pas. Si c'est un fichier CSV, renommez-le en .csv.",
    },
    "file_xls_unsupported": {
        "en": "'{path}' is an old Excel (.xls) or password-protected workbook, which cannot be read here. Save it as .xlsx without a password, or as CSV.",
        "fr": "« {path} » est un classeur Excel ancien (.xls) ou protégé par mot de passe, illisible ici. Enregistrez-le en .xlsx sans mot de passe, ou en CSV.",
    },
    "file_corrupt": {
        "en": "'{path}' is not a valid {format} file ({reason}).",
        "fr": "« {path} » n'est pas un fichier {format} valide ({reason}).",
    },
    "file_not_text": {
        "en": "'{path}' holds binary data, not text: it is neither CSV/TSV nor Parquet nor Excel.",
        "fr": "« {path} » contient des données binaires, pas du texte : ce n'est ni du CSV/TSV, ni du Parquet, ni de l'Excel.",
    },
    "file_encoding": {
        "en": "'{path}' is text in an unknown encoding (neither UTF-8 nor Windows-1252). Save it as UTF-8.",
        "fr": "« {path} » est un texte dans un encodage inconnu (ni UTF-8, ni Windows-1252). Enregistrez-le en UTF-8.",
    },
    "file_delimiter": {
        "en": "'{path}' was read as a single column '{column}', which contains '{delimiter}': the values are probably separated by '{delimiter}' inside quotes. Check how the file was exported.",
        "fr": "« {path} » a été lu comme une seule colonne « {column} », qui contient « {delimiter} » : les valeurs sont sans doute séparées par « {delimiter} » à l'intérieur de guillemets. Vérifiez l'export du fichier.",
    },
    "file_bad_row": {
        "en": "Line {line} of '{path}' has {found} values but the header has {expected} (separator '{delimiter}'). Check the separator and the quotes on that line.",
        "fr": "La ligne {line} de « {path} » a {found} valeurs alors que l'en-tête en a {expected} (séparateur « {delimiter} »). Vérifiez le séparateur et les guillemets de cette ligne.",
    },
    "file_duplicate_columns": {
        "en": "'{path}' has several columns with the same name: {columns}. Give each column a unique name.",
        "fr": "« {path} » a plusieurs colonnes du même nom : {columns}. Donnez à chaque colonne un nom unique.",
    },
    "file_out_format": {
        "en": "Cannot write '{path}': the file name must end with one of {formats}.",
        "fr": "Impossible d'écrire « {path} » : le nom du fichier doit se terminer par l'une de ces extensions : {formats}.",
    },
    "file_out_folder_missing": {
        "en": "Cannot write '{path}': the folder '{folder}' does not exist.",
        "fr": "Impossible d'écrire « {path} » : le dossier « {folder} » n'existe pas.",
    },
    "parquet_needs_pyarrow": {
        "en": "Parquet files need pyarrow, which is not installed: pip install 'automl-hub[parquet]'.",
        "fr": "Les fichiers Parquet demandent pyarrow, qui n'est pas installé : pip install 'automl-hub[parquet]'.",
    },
    "file_excel_too_many_rows": {
        "en": "Cannot write '{path}': {rows} rows exceed Excel's limit of {limit}. Use .csv or .parquet.",
        "fr": "Impossible d'écrire « {path} » : {rows} lignes dépassent la limite d'Excel ({limit}). Utilisez .csv ou .parquet.",
    },
    "cli_usage": {
        "en": "{detail} (see 'automl --help').",
        "fr": "{detail} (voir « automl --help »).",
    },
    "cli_unexpected": {
        "en": "unexpected failure ({kind}: {detail}).",
        "fr": "échec inattendu ({kind} : {detail}).",
    },
    "cli_os_error": {
        "en": "cannot access '{path}': {reason}.",
        "fr": "accès impossible à « {path} » : {reason}.",
    },
    "cli_interrupted": {
        "en": "interrupted.",
        "fr": "interrompu.",
    },
    "cli_cancelling": {
        "en": "Stopping: keeping the best model found so far (Ctrl-C again to abort)…",
        "fr": "Arrêt : conservation du meilleur modèle trouvé jusqu'ici (Ctrl-C à nouveau pour abandonner)…",
    },
    "cli_cancelled": {
        "en": "Training stopped early at your request.",
        "fr": "Entraînement arrêté plus tôt à votre demande.",
    },
    "cli_first_sheet": {
        "en": "'{path}' has {count} sheets; only the first one, '{sheet}', is read.",
        "fr": "« {path} » a {count} feuilles ; seule la première, « {sheet} », est lue.",
    },
    "cli_training": {
        "en": "Training on {rows} rows and {columns} columns, target '{target}'…",
        "fr": "Entraînement sur {rows} lignes et {columns} colonnes, cible « {target} »…",
    },
    "cli_progress": {
        "en": "Training",
        "fr": "Entraînement",
    },
    "cli_progress_ensemble": {
        "en": "Ensemble",
        "fr": "Ensemble",
    },
    "cli_progress_postfix": {
        "en": "best {best:.4f}, {count} model(s)",
        "fr": "meilleur {best:.4f}, {count} modèle(s)",
    },
    "cli_warnings": {
        "en": "Warnings:",
        "fr": "Avertissements :",
    },
    "cli_leaderboard": {
        "en": "Leaderboard ({metric}, best first):",
        "fr": "Classement ({metric}, le meilleur en premier) :",
    },
    "cli_leaderboard_more": {
        "en": "… and {count} more model(s).",
        "fr": "… et {count} autre(s) modèle(s).",
    },
    "cli_saved": {
        "en": "Model saved to '{path}'.",
        "fr": "Modèle enregistré dans « {path} ».",
    },
    "cli_predictions_written": {
        "en": "{rows} prediction(s) written to '{path}'.",
        "fr": "{rows} prédiction(s) écrite(s) dans « {path} ».",
    },
    "cli_label": {"en": "{label}:", "fr": "{label} :"},
    "sample_written": {
        "en": "{path}: {rows} rows of synthetic customer churn.",
        "fr": "{path} : {rows} lignes de données synthétiques d'attrition client.",
    },
    "cli_info_format": {"en": "Format", "fr": "Format"},
    "cli_info_task": {"en": "Task", "fr": "Tâche"},
    "cli_info_metric": {"en": "Metric", "fr": "Métrique"},
    "cli_info_target": {"en": "Target", "fr": "Cible"},
    "cli_info_classes": {"en": "Classes", "fr": "Classes"},
    "cli_info_versions": {"en": "Library versions", "fr": "Versions des bibliothèques"},
    "cli_info_schema": {"en": "Input columns", "fr": "Colonnes d'entrée"},
    "cli_info_ensemble": {"en": "Ensemble", "fr": "Ensemble"},
    "cli_info_leaderboard": {"en": "Leaderboard", "fr": "Classement"},
    "cli_info_best_model": {"en": "Best model", "fr": "Meilleur modèle"},
    "cli_info_best_score": {"en": "Validation score", "fr": "Score de validation"},
    "cli_info_validation_scores": {"en": "Validation scores", "fr": "Scores de validation"},
    "cli_info_feature_importance": {"en": "Most important columns", "fr": "Colonnes les plus importantes"},
    "cli_info_guardrails": {"en": "Warnings", "fr": "Avertissements"},
    "cli_help_description": {
        "en": "Train, apply and inspect AutoML models from the command line.",
        "fr": "Entraîner, appliquer et inspecter des modèles AutoML en ligne de commande.",
    },
    "cli_help_lang": {
        "en": "language of the messages",
        "fr": "langue des messages",
    },
    "cli_help_train": {
        "en": "search for the best model for a table and save it",
        "fr": "chercher le meilleur modèle pour un tableau et l'enregistrer",
    },
    "cli_help_predict": {
        "en": "apply a saved model to a table and write the predictions",
        "fr": "appliquer un modèle enregistré à un tableau et écrire les prédictions",
    },
    "cli_help_info": {
        "en": "describe a saved model without loading it",
        "fr": "décrire un modèle enregistré sans le charger",
    },
    "cli_help_data": {
        "en": "table: CSV, TSV (also .gz), Parquet or Excel .xlsx",
        "fr": "tableau : CSV, TSV (aussi .gz), Parquet ou Excel .xlsx",
    },
    "cli_help_target": {
        "en": "column to predict",
        "fr": "colonne à prédire",
    },
    "cli_help_time_budget": {
        "en": "search time in seconds (default: 60)",
        "fr": "durée de la recherche en secondes (défaut : 60)",
    },
    "cli_help_metric": {
        "en": "metric to optimise (default: auto)",
        "fr": "métrique à optimiser (défaut : auto)",
    },
    "cli_help_task": {
        "en": "kind of prediction (default: auto, from the target)",
        "fr": "type de prédiction (défaut : auto, d'après la cible)",
    },
    "cli_help_seed": {
        "en": "random seed, for reproducible results (default: 0)",
        "fr": "graine aléatoire, pour des résultats reproductibles (défaut : 0)",
    },
    "cli_help_max_trials": {
        "en": "stop after this many models",
        "fr": "s'arrêter après ce nombre de modèles",
    },
    "cli_help_model_out": {
        "en": "model file to write (default: next to DATA, named DATA.automl)",
        "fr": "fichier de modèle à écrire (défaut : à côté de DATA, nommé DATA.automl)",
    },
    "cli_help_model": {
        "en": "model file written by 'automl train'",
        "fr": "fichier de modèle écrit par « automl train »",
    },
    "cli_help_predictions_out": {
        "en": "file to write: .csv, .csv.gz, .tsv, .parquet or .xlsx",
        "fr": "fichier à écrire : .csv, .csv.gz, .tsv, .parquet ou .xlsx",
    },
    "cli_help_json": {
        "en": "print the metadata as JSON",
        "fr": "afficher les métadonnées en JSON",
    },
    # --- make start -------------------------------------------------------------
    "start_banner": {
        "en": ("AutoML Hub, embedded default (SQLite, local storage, local job pool), state in {state_dir}\n"
               "  open     {url}/hub/login\n"
               "  log in   {admin} / {admin_password}   (team '{team}': trains and administers)\n"
               "  others   any name / {password}   (no access until an administrator puts them in a group tenant:<team> and gives them a role)\n"
               "  REST API {url}/services/automl/api/  (OpenAPI: {url}/services/automl/api/openapi.json)\n"
               "Ctrl-C stops it."),
        "fr": ("AutoML Hub, configuration intégrée (SQLite, stockage local, exécution locale), état dans {state_dir}\n"
               "  ouvrir      {url}/hub/login\n"
               "  connexion   {admin} / {admin_password}   (équipe « {team} » : entraîne et administre)\n"
               "  autres      n'importe quel nom / {password}   (aucun accès tant qu'un administrateur ne les a pas mis dans un groupe tenant:<équipe> avec un rôle)\n"
               "  API REST    {url}/services/automl/api/  (OpenAPI : {url}/services/automl/api/openapi.json)\n"
               "Ctrl-C l'arrête."),
    },
}


def language(lang: str | None = None) -> str:
    if lang in LANGUAGES:
        return lang
    return get_settings().default_language


def message(code: str, lang: str | None = None, **params) -> str:
    """Render `code` in `lang` (the deployment's default language when None)."""
    entry = CATALOGUE.get(code)
    if entry is None:
        return code
    template = entry.get(language(lang)) or entry["en"]
    try:
        return template.format(**params)
    except (KeyError, IndexError, ValueError):
        return template
